package wire

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/certs"
	"github.com/cloister-faas/cloister/internal/receipt"
)

// The binary format of InvokeRequest and InvokeReply is what a gateway and
// a worker exchange on the bus for every synchronous invocation
// (docs/adr/0020-binary-invoke-envelope.md). JSON stays at the public API,
// in the async queue and in activation records; on the bus, where every
// call pays for it twice, the ciphertext and the receipt travel as bytes,
// never base64-encoded, and the decoder hands out slices of the message
// instead of copies.
//
// A message is one tag byte, then the fields in a fixed order. Integers
// are varints (zig-zag for signed ones), byte strings and strings are a
// uvarint length then the bytes, optional structs a presence byte, lists
// a uvarint count. The tags are bytes that no JSON text starts with, so
// a JSON message is refused with a clear error rather than misread.
const (
	tagInvokeRequest byte = 0xc7
	tagInvokeReply   byte = 0xc8
)

// ErrMalformed is the error of a binary message that does not decode.
var ErrMalformed = errors.New("malformed binary message")

// AppendBinary appends r's binary encoding to b.
func (r *InvokeRequest) AppendBinary(b []byte) ([]byte, error) {
	b = append(b, tagInvokeRequest)
	b = appendString(b, r.Namespace)
	b = appendString(b, r.Name)
	b = binary.AppendVarint(b, int64(r.Version))
	b = appendString(b, r.Sealed.Mode)
	b = binary.AppendVarint(b, int64(r.Sealed.Version))
	b = appendBytes(b, r.Sealed.Enc)
	b = appendBytes(b, r.Sealed.Ticket)
	b = appendBytes(b, r.Sealed.Ciphertext)
	// A sequence's steps are rare and small: JSON inside.
	var steps []byte
	if len(r.Sealed.Steps) > 0 {
		var err error
		if steps, err = json.Marshal(r.Sealed.Steps); err != nil {
			return nil, err
		}
	}
	b = appendBytes(b, steps)
	b = appendBytes(b, r.Plain)
	b = appendString(b, r.Mode)
	b = appendString(b, r.Activation)
	return appendBool(b, r.Logs), nil
}

// UnmarshalBinary decodes data, which must be exactly one binary
// InvokeRequest. Byte fields alias data. Errors wrap ErrMalformed.
func (r *InvokeRequest) UnmarshalBinary(data []byte) error {
	d := decoder{b: data, malformed: ErrMalformed}
	if d.byte() != tagInvokeRequest {
		return fmt.Errorf("%w: not a binary invoke request", ErrMalformed)
	}
	*r = InvokeRequest{}
	r.Namespace, r.Name, r.Version = d.string(), d.string(), d.int()
	r.Sealed.Mode, r.Sealed.Version = d.string(), d.int()
	r.Sealed.Enc, r.Sealed.Ticket, r.Sealed.Ciphertext = d.bytes(), d.bytes(), d.bytes()
	if steps := d.bytes(); len(steps) > 0 && d.err == nil {
		if err := json.Unmarshal(steps, &r.Sealed.Steps); err != nil {
			return fmt.Errorf("%w: steps: %v", ErrMalformed, err)
		}
	}
	r.Plain, r.Mode, r.Activation, r.Logs = d.bytes(), d.string(), d.string(), d.bool()
	return d.end()
}

// AppendBinary appends r's binary encoding to b.
func (r *InvokeReply) AppendBinary(b []byte) ([]byte, error) {
	b = append(b, tagInvokeReply)
	b = binary.AppendVarint(b, int64(r.Version))
	b = appendBytes(b, r.Output)
	b = appendBytes(b, r.Ciphertext)
	b = appendBytes(b, r.Ticket)
	var exp int64
	if !r.TicketExpires.IsZero() {
		exp = r.TicketExpires.UnixNano()
	}
	b = binary.AppendVarint(b, exp)
	b = appendSigned(b, r.Receipt)
	b = appendBool(b, r.Error != nil)
	if r.Error != nil {
		b = appendString(b, string(r.Error.Code))
		b = appendString(b, r.Error.Message)
	}
	b = appendBytes(b, r.Logs)
	b = binary.AppendUvarint(b, uint64(len(r.Receipts)))
	for _, s := range r.Receipts {
		if s == nil {
			return nil, errors.New("encoding invoke reply: a nil receipt in the chain")
		}
		b = appendSigned(b, s)
	}
	b = binary.AppendVarint(b, int64(r.Step))
	return appendString(b, string(r.StepCode)), nil
}

// UnmarshalBinary decodes data, which must be exactly one binary
// InvokeReply. Byte fields alias data. Errors wrap ErrMalformed.
func (r *InvokeReply) UnmarshalBinary(data []byte) error {
	d := decoder{b: data, malformed: ErrMalformed}
	if d.byte() != tagInvokeReply {
		return fmt.Errorf("%w: not a binary invoke reply", ErrMalformed)
	}
	*r = InvokeReply{}
	r.Version = d.int()
	r.Output, r.Ciphertext, r.Ticket = d.bytes(), d.bytes(), d.bytes()
	if exp := d.varint(); exp != 0 {
		r.TicketExpires = time.Unix(0, exp).UTC()
	}
	r.Receipt = d.signed()
	if d.bool() {
		r.Error = &apierr.Error{Code: apierr.Code(d.string()), Message: d.string()}
	}
	r.Logs = d.bytes()
	// Each receipt takes at least five bytes: a count over the bytes left
	// is malformed, and bounds the allocation.
	if n := d.uvarint(); n > 0 && d.err == nil {
		if n > uint64(len(d.b))/5 {
			return fmt.Errorf("%w: %d receipts in %d bytes", ErrMalformed, n, len(d.b))
		}
		r.Receipts = make([]*receipt.Signed, 0, n)
		for range n {
			s := d.signed()
			if s == nil {
				d.fail()
				break
			}
			r.Receipts = append(r.Receipts, s)
		}
	}
	r.Step, r.StepCode = d.int(), apierr.Code(d.string())
	return d.end()
}

func appendBytes(b, v []byte) []byte {
	return append(binary.AppendUvarint(b, uint64(len(v))), v...)
}

func appendString(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

func appendBool(b []byte, v bool) []byte {
	if v {
		return append(b, 1)
	}
	return append(b, 0)
}

// BinarySize is about the size of r's binary encoding, never less: a
// buffer of this capacity holds it without growing.
func (r *InvokeReply) BinarySize() int {
	n := 100 + len(r.Output) + len(r.Ciphertext) + len(r.Ticket) + len(r.Logs) + len(r.StepCode) + signedSize(r.Receipt)
	if r.Error != nil {
		n += 20 + len(r.Error.Code) + len(r.Error.Message)
	}
	for _, s := range r.Receipts {
		n += signedSize(s)
	}
	return n
}

// signedSize bounds what appendSigned appends for s.
func signedSize(s *receipt.Signed) int {
	if s == nil {
		return 1
	}
	return 41 + len(s.Receipt) + len(s.Signature) + len(s.WorkerCert.Body) + len(s.WorkerCert.Signature)
}

// appendSigned appends a presence byte and, for a receipt, its four byte
// strings.
func appendSigned(b []byte, s *receipt.Signed) []byte {
	b = appendBool(b, s != nil)
	if s == nil {
		return b
	}
	b = appendBytes(b, s.Receipt)
	b = appendBytes(b, s.Signature)
	b = appendBytes(b, s.WorkerCert.Body)
	return appendBytes(b, s.WorkerCert.Signature)
}

// fail records that the message is malformed: the first error sticks,
// and later reads return zero values.
func (d *decoder) fail() {
	if d.err == nil {
		d.err = d.malformedErr()
	}
	d.b = nil
}

func (d *decoder) byte() byte {
	if len(d.b) == 0 {
		d.fail()
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) bool() bool {
	switch d.byte() {
	case 0:
		return false
	case 1:
		return true
	}
	d.fail()
	return false
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

// int reads a varint that must fit an int32 (versions, steps).
func (d *decoder) int() int {
	v := d.varint()
	if v < math.MinInt32 || v > math.MaxInt32 {
		d.fail()
		return 0
	}
	return int(v)
}

// bytes reads a byte string: a slice of the message, nil when empty (as
// JSON's omitempty decodes an empty one), with its capacity cut so that an
// append to it cannot write over the rest of the message.
func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.fail()
		return nil
	}
	if n == 0 {
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) string() string { return string(d.bytes()) }

func (d *decoder) signed() *receipt.Signed {
	if !d.bool() {
		return nil
	}
	s := &receipt.Signed{Receipt: d.bytes(), Signature: d.bytes()}
	s.WorkerCert = certs.Signed{Body: d.bytes(), Signature: d.bytes()}
	if d.err != nil {
		return nil
	}
	return s
}

// end reports the first error, or trailing bytes.
func (d *decoder) end() error {
	if d.err != nil {
		return fmt.Errorf("%w: truncated or out of range", d.err)
	}
	if len(d.b) > 0 {
		return fmt.Errorf("%w: %d trailing bytes", ErrMalformed, len(d.b))
	}
	return nil
}
