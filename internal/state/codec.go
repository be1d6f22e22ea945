package state

import (
	"encoding/binary"
	"errors"
	"math"
)

// The binary encoding of the anchor protocol. Requests and replies travel
// on the bus as raw bytes (bus.CallBytes, bus.ServeBytes), and the sealed
// batches inside them are binary too: JSON around AES-GCM output, in a JSON
// envelope, cost more than the anchor's work.
//
// Request:   0xA1 ‖ len(namespace) (1) ‖ namespace ‖ len(name) (1) ‖ name ‖ nonce (12) ‖ sealed ops
// Reply:     0xB1 ‖ nonce (12) ‖ sealed results
//
// Neither starts with '{', so a JSON message is never taken for one.
//
// The plaintext of the sealed parts is a uvarint count, then the items.
// Integers are uvarints, byte strings a uvarint length and the bytes:
//
//	op:     kind (1) ‖ key ‖ version ‖ expect ‖ rev ‖ digest ‖ size ‖ prefix ‖ start ‖ limit ‖ tomb (1) ‖ holder
//	result: status (1) ‖ flags (1) ‖ [entry: version ‖ rev ‖ digest ‖ size] ‖ keys (count, then each) ‖ msg ‖ lease ms ‖ retry ms
//
// Decoding is strict: unknown kinds, statuses or flags, lengths over the
// limits below, varints that are not minimal and trailing bytes are all
// refused, so every message has exactly one encoding.

const (
	tagRequest = 0xA1
	tagReply   = 0xB1
	// maxSealedBytes bounds the sealed part of a request or reply (a
	// batch of maxBatch operations, or a list of maxList keys, is far
	// smaller).
	maxSealedBytes = 4 << 20
	// maxDigestBytes bounds a digest (the anchor accepts only sha256).
	maxDigestBytes = 64
	// maxHolderBytes bounds a lease holder's name (the anchor ignores longer).
	maxHolderBytes = 64
	// maxMsgBytes bounds a result's message.
	maxMsgBytes = 1024
)

var errMalformed = errors.New("malformed anchor message")

// Op kinds and result statuses on the wire.
var (
	kindCodes   = map[string]byte{opGet: 1, opPut: 2, opCAS: 3, opDel: 4, opList: 5, opLease: 6}
	kindNames   = [...]string{1: opGet, 2: opPut, 3: opCAS, 4: opDel, 5: opList, 6: opLease}
	statusCodes = map[string]byte{stOK: 1, stConflict: 2, stQuota: 3, stInvalid: 4, stRetry: 5}
	statusNames = [...]string{1: stOK, 2: stConflict, 3: stQuota, 4: stInvalid, 5: stRetry}
)

// Result flags.
const (
	flagEntry   = 1 << 0
	flagDeleted = 1 << 1
	flagMore    = 1 << 2
	flagsKnown  = flagEntry | flagDeleted | flagMore
)

// AppendBinary appends the request's wire encoding to b.
func (r *AnchorRequest) AppendBinary(b []byte) ([]byte, error) {
	if len(r.Namespace) > math.MaxUint8 || len(r.Name) > math.MaxUint8 || len(r.Nonce) != nonceSize || len(r.Sealed) > maxSealedBytes {
		return nil, errMalformed
	}
	b = append(b, tagRequest, byte(len(r.Namespace)))
	b = append(b, r.Namespace...)
	b = append(b, byte(len(r.Name)))
	b = append(b, r.Name...)
	b = append(b, r.Nonce...)
	return append(b, r.Sealed...), nil
}

// UnmarshalBinary decodes a request from its wire encoding. Nonce and
// Sealed alias b.
func (r *AnchorRequest) UnmarshalBinary(b []byte) error {
	d := decoder{b: b}
	if d.byte() != tagRequest {
		return errMalformed
	}
	ns := d.next(int(d.byte()))
	name := d.next(int(d.byte()))
	nonce := d.next(nonceSize)
	if d.err != nil || len(d.b) > maxSealedBytes {
		return errMalformed
	}
	*r = AnchorRequest{Namespace: string(ns), Name: string(name), Nonce: nonce, Sealed: d.b}
	return nil
}

// AppendBinary appends the reply's wire encoding to b.
func (r *AnchorReply) AppendBinary(b []byte) ([]byte, error) {
	if len(r.Nonce) != nonceSize || len(r.Sealed) > maxSealedBytes {
		return nil, errMalformed
	}
	b = append(b, tagReply)
	b = append(b, r.Nonce...)
	return append(b, r.Sealed...), nil
}

// UnmarshalBinary decodes a reply from its wire encoding. Nonce and
// Sealed alias b.
func (r *AnchorReply) UnmarshalBinary(b []byte) error {
	d := decoder{b: b}
	if d.byte() != tagReply {
		return errMalformed
	}
	nonce := d.next(nonceSize)
	if d.err != nil || len(d.b) > maxSealedBytes {
		return errMalformed
	}
	*r = AnchorReply{Nonce: nonce, Sealed: d.b}
	return nil
}

// appendEntry appends an entry's version, revision, digest and size (not
// whether it is deleted).
func appendEntry(b []byte, e *entry) ([]byte, error) {
	if len(e.Digest) > maxDigestBytes || e.Size < 0 || e.Size > math.MaxInt32 {
		return nil, errMalformed
	}
	b = binary.AppendUvarint(b, e.Version)
	b = binary.AppendUvarint(b, e.Rev)
	b = appendBytes(b, e.Digest)
	return binary.AppendUvarint(b, uint64(e.Size)), nil
}

func appendBool(b []byte, v bool) []byte {
	if v {
		return append(b, 1)
	}
	return append(b, 0)
}

func appendBytes(b, s []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// appendOps encodes a batch.
func appendOps(b []byte, ops []op) ([]byte, error) {
	b = binary.AppendUvarint(b, uint64(len(ops)))
	for i := range ops {
		o := &ops[i]
		kind, ok := kindCodes[o.Kind]
		if !ok || len(o.Key) > MaxKeyBytes || len(o.Prefix) > MaxKeyBytes || len(o.Start) > MaxKeyBytes ||
			len(o.Digest) > maxDigestBytes || len(o.Holder) > maxHolderBytes ||
			o.Size < 0 || o.Size > math.MaxInt32 || o.Limit < 0 || o.Limit > math.MaxInt32 {
			return nil, errMalformed
		}
		b = append(b, kind)
		b = appendBytes(b, o.Key)
		b = binary.AppendUvarint(b, o.Version)
		b = binary.AppendUvarint(b, o.Expect)
		b = binary.AppendUvarint(b, o.Rev)
		b = appendBytes(b, o.Digest)
		b = binary.AppendUvarint(b, uint64(o.Size))
		b = appendBytes(b, o.Prefix)
		b = appendBytes(b, o.Start)
		b = binary.AppendUvarint(b, uint64(o.Limit))
		b = appendBool(b, o.Tomb)
		b = appendBytes(b, []byte(o.Holder))
	}
	return b, nil
}

// decodeOps decodes a batch of 1 to maxBatch operations. The byte fields
// alias b.
func decodeOps(b []byte) ([]op, error) {
	d := decoder{b: b}
	n := d.count(maxBatch)
	if d.err != nil || n == 0 {
		return nil, errMalformed
	}
	// Each op takes at least 12 bytes: no allocation beyond what b holds.
	if n > len(d.b)/12 {
		return nil, errMalformed
	}
	ops := make([]op, n)
	for i := range ops {
		o := &ops[i]
		k := d.byte()
		if int(k) >= len(kindNames) || kindNames[k] == "" {
			return nil, errMalformed
		}
		o.Kind = kindNames[k]
		o.Key = d.bytes(MaxKeyBytes)
		o.Version = d.uvarint()
		o.Expect = d.uvarint()
		o.Rev = d.uvarint()
		o.Digest = d.bytes(maxDigestBytes)
		o.Size = d.int()
		o.Prefix = d.bytes(MaxKeyBytes)
		o.Start = d.bytes(MaxKeyBytes)
		o.Limit = d.int()
		o.Tomb = d.bool()
		o.Holder = string(d.bytes(maxHolderBytes))
		if d.err != nil {
			return nil, errMalformed
		}
	}
	if len(d.b) != 0 {
		return nil, errMalformed
	}
	return ops, nil
}

// appendResults encodes a batch's results.
func appendResults(b []byte, results []result) ([]byte, error) {
	b = binary.AppendUvarint(b, uint64(len(results)))
	for i := range results {
		r := &results[i]
		st, ok := statusCodes[r.Status]
		if !ok || len(r.Keys) > maxList || len(r.Msg) > maxMsgBytes || r.LeaseMS < 0 || r.RetryMS < 0 {
			return nil, errMalformed
		}
		var flags byte
		if e := r.Entry; e != nil {
			flags |= flagEntry
			if e.Deleted {
				flags |= flagDeleted
			}
		}
		if r.More {
			flags |= flagMore
		}
		b = append(b, st, flags)
		if r.Entry != nil {
			var err error
			if b, err = appendEntry(b, r.Entry); err != nil {
				return nil, err
			}
		}
		b = binary.AppendUvarint(b, uint64(len(r.Keys)))
		for _, k := range r.Keys {
			if len(k) > MaxKeyBytes {
				return nil, errMalformed
			}
			b = appendBytes(b, k)
		}
		b = appendBytes(b, []byte(r.Msg))
		b = binary.AppendUvarint(b, uint64(r.LeaseMS))
		b = binary.AppendUvarint(b, uint64(r.RetryMS))
	}
	return b, nil
}

// decodeResults decodes a batch's results (at most maxBatch). The byte
// fields alias b.
func decodeResults(b []byte) ([]result, error) {
	d := decoder{b: b}
	n := d.count(maxBatch)
	// Each result takes at least 6 bytes.
	if d.err != nil || n > len(d.b)/6 {
		return nil, errMalformed
	}
	results := make([]result, n)
	for i := range results {
		r := &results[i]
		st := d.byte()
		flags := d.byte()
		if d.err != nil || int(st) >= len(statusNames) || statusNames[st] == "" ||
			flags&^flagsKnown != 0 || (flags&flagDeleted != 0 && flags&flagEntry == 0) {
			return nil, errMalformed
		}
		r.Status = statusNames[st]
		r.More = flags&flagMore != 0
		if flags&flagEntry != 0 {
			r.Entry = d.entry()
			r.Entry.Deleted = flags&flagDeleted != 0
		}
		if nk := d.count(maxList); nk > 0 {
			if nk > len(d.b) {
				return nil, errMalformed
			}
			r.Keys = make([][]byte, nk)
			for j := range r.Keys {
				r.Keys[j] = d.bytes(MaxKeyBytes)
			}
		}
		r.Msg = string(d.bytes(maxMsgBytes))
		r.LeaseMS = d.int64()
		r.RetryMS = d.int64()
		if d.err != nil {
			return nil, errMalformed
		}
	}
	if len(d.b) != 0 {
		return nil, errMalformed
	}
	return results, nil
}

// decoder reads a message; the first error sticks and every later read
// returns zero values.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail() { d.err, d.b = errMalformed, nil }

func (d *decoder) byte() byte {
	if d.err != nil || len(d.b) == 0 {
		d.fail()
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) next(n int) []byte {
	if d.err != nil || n > len(d.b) {
		d.fail()
		return nil
	}
	s := d.b[:n:n]
	d.b = d.b[n:]
	return s
}

// uvarint reads a minimal uvarint.
func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 || n != uvarintLen(v) {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

// count reads a uvarint no larger than limit.
func (d *decoder) count(limit int) int {
	v := d.uvarint()
	if v > uint64(limit) {
		d.fail()
		return 0
	}
	return int(v)
}

func (d *decoder) int() int { return d.count(math.MaxInt32) }

func (d *decoder) int64() int64 {
	v := d.uvarint()
	if v > math.MaxInt64 {
		d.fail()
		return 0
	}
	return int64(v)
}

// entry reads what appendEntry wrote.
func (d *decoder) entry() *entry {
	return &entry{Version: d.uvarint(), Rev: d.uvarint(), Digest: d.bytes(maxDigestBytes), Size: d.int()}
}

// bool reads a byte that must be 0 or 1.
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

// bytes reads a byte string of at most limit bytes; an empty one is nil.
func (d *decoder) bytes(limit int) []byte {
	n := d.count(limit)
	if n == 0 {
		return nil
	}
	return d.next(n)
}
