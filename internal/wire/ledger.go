package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Ledger appends travel in a binary encoding rather than JSON: a batch is
// up to MaxLedgerBatch receipts of a few KB each, and base64 inside JSON
// cost more CPU at the coordinator than logging them.
//
// LedgerAppendRequest:
//
//	"CLA1"
//	u32 len, certificate body | u32 len, certificate signature
//	u32 len, batch signature
//	u32 count, then count × (u32 len, entry)
//
// LedgerAppendResponse: "CLI1", u32 count, then count × u64 index.
// Integers are big-endian. Decoding is strict: every length is bounded and
// the encoding must be consumed exactly.
const (
	ledgerAppendMagic   = "CLA1"
	ledgerIndicesMagic  = "CLI1"
	maxLedgerCertPart   = 64 << 10
	maxLedgerSignature  = 1 << 10
	MaxLedgerEntryBytes = 1 << 16
)

// ErrMalformedLedgerBatch is returned for an encoding that does not parse.
var ErrMalformedLedgerBatch = errors.New("malformed ledger batch")

// MarshalBinary encodes r.
func (r *LedgerAppendRequest) MarshalBinary() ([]byte, error) {
	if len(r.Receipts) > MaxLedgerBatch {
		return nil, fmt.Errorf("%w: %d receipts, limit %d", ErrMalformedLedgerBatch, len(r.Receipts), MaxLedgerBatch)
	}
	n := len(ledgerAppendMagic) + 16 + len(r.WorkerCert.Body) + len(r.WorkerCert.Signature) + len(r.Signature)
	for _, e := range r.Receipts {
		n += 4 + len(e)
	}
	b := make([]byte, 0, n)
	b = append(b, ledgerAppendMagic...)
	for _, part := range [][]byte{r.WorkerCert.Body, r.WorkerCert.Signature, r.Signature} {
		b = binary.BigEndian.AppendUint32(b, uint32(len(part)))
		b = append(b, part...)
	}
	b = binary.BigEndian.AppendUint32(b, uint32(len(r.Receipts)))
	for _, e := range r.Receipts {
		if len(e) > MaxLedgerEntryBytes {
			return nil, fmt.Errorf("%w: an entry of %d bytes, limit %d", ErrMalformedLedgerBatch, len(e), MaxLedgerEntryBytes)
		}
		b = binary.BigEndian.AppendUint32(b, uint32(len(e)))
		b = append(b, e...)
	}
	return b, nil
}

// UnmarshalBinary decodes an encoding made by MarshalBinary. The receipts
// alias b.
func (r *LedgerAppendRequest) UnmarshalBinary(b []byte) error {
	d := decoder{b: b, malformed: ErrMalformedLedgerBatch}
	if string(d.take(len(ledgerAppendMagic))) != ledgerAppendMagic {
		return fmt.Errorf("%w: bad magic", ErrMalformedLedgerBatch)
	}
	var out LedgerAppendRequest
	out.WorkerCert.Body = d.part(maxLedgerCertPart)
	out.WorkerCert.Signature = d.part(maxLedgerSignature)
	out.Signature = d.part(maxLedgerSignature)
	count := d.u32()
	if d.err == nil && (count == 0 || count > MaxLedgerBatch) {
		return fmt.Errorf("%w: %d receipts, want 1 to %d", ErrMalformedLedgerBatch, count, MaxLedgerBatch)
	}
	if d.err == nil {
		out.Receipts = make([][]byte, 0, count)
	}
	for i := uint32(0); i < count && d.err == nil; i++ {
		e := d.part(MaxLedgerEntryBytes)
		if d.err == nil && len(e) == 0 {
			d.err = fmt.Errorf("%w: entry %d is empty", ErrMalformedLedgerBatch, i)
		}
		out.Receipts = append(out.Receipts, e)
	}
	if d.err == nil && len(d.b) != 0 {
		d.err = fmt.Errorf("%w: %d trailing bytes", ErrMalformedLedgerBatch, len(d.b))
	}
	if d.err != nil {
		return d.err
	}
	*r = out
	return nil
}

// MarshalBinary encodes r.
func (r *LedgerAppendResponse) MarshalBinary() ([]byte, error) {
	b := make([]byte, 0, len(ledgerIndicesMagic)+4+8*len(r.Indices))
	b = append(b, ledgerIndicesMagic...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(r.Indices)))
	for _, i := range r.Indices {
		b = binary.BigEndian.AppendUint64(b, i)
	}
	return b, nil
}

// UnmarshalBinary decodes an encoding made by MarshalBinary.
func (r *LedgerAppendResponse) UnmarshalBinary(b []byte) error {
	d := decoder{b: b, malformed: ErrMalformedLedgerBatch}
	if string(d.take(len(ledgerIndicesMagic))) != ledgerIndicesMagic {
		return fmt.Errorf("%w: bad magic in indices", ErrMalformedLedgerBatch)
	}
	count := d.u32()
	if d.err == nil && (count > MaxLedgerBatch || uint64(len(d.b)) != 8*uint64(count)) {
		return fmt.Errorf("%w: %d indices in %d bytes", ErrMalformedLedgerBatch, count, len(d.b))
	}
	if d.err != nil {
		return d.err
	}
	idx := make([]uint64, count)
	for i := range idx {
		idx[i] = binary.BigEndian.Uint64(d.take(8))
	}
	r.Indices = idx
	return nil
}

// decoder reads the binary messages of this package (ledger batches here,
// invoke envelopes in binary.go); the first failure sticks in err, which
// wraps malformed.
type decoder struct {
	b         []byte
	err       error
	malformed error // what a failure wraps: ErrMalformedLedgerBatch, ErrMalformed
}

func (d *decoder) malformedErr() error {
	if d.malformed == nil {
		return ErrMalformed
	}
	return d.malformed
}

func (d *decoder) take(n int) []byte {
	if d.err != nil {
		return nil
	}
	if n > len(d.b) {
		d.err = fmt.Errorf("%w: truncated", d.malformedErr())
		return nil
	}
	p := d.b[:n:n]
	d.b = d.b[n:]
	return p
}

func (d *decoder) u32() uint32 {
	p := d.take(4)
	if p == nil {
		return 0
	}
	return binary.BigEndian.Uint32(p)
}

// part reads a u32 length and that many bytes, refusing more than limit.
func (d *decoder) part(limit int) []byte {
	n := d.u32()
	if d.err == nil && n > uint32(limit) {
		d.err = fmt.Errorf("%w: a part of %d bytes, limit %d", d.malformedErr(), n, limit)
	}
	return d.take(int(n))
}
