package state

import (
	"crypto/rand"
	"errors"
)

// The anchor protocol. A worker sends the anchor a batch of operations on
// one function's state, sealed with the function's anchor subkey (so that
// only a holder of the state key can ask or commit, and the host sees no
// key names); the anchor answers with one result per operation, sealed under
// the same key and bound to the request's nonce (so that the host cannot
// replay an old answer).

// AnchorRequest is what travels on the bus to the anchor.
type AnchorRequest struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Nonce     []byte `json:"nonce"`
	Sealed    []byte `json:"sealed"`
}

// AnchorReply is the anchor's answer.
type AnchorReply struct {
	Nonce  []byte `json:"nonce"`
	Sealed []byte `json:"sealed"`
}

// Operation kinds.
const (
	opGet  = "get"
	opPut  = "put"  // commit a new version if it is newer than the current one
	opCAS  = "cas"  // commit a new version if the current one is exactly Expect
	opDel  = "del"  // commit a tombstone if it is newer than the current one
	opList = "list" // live keys with a prefix, after Start, at most Limit
	// opLease asks for (or renews) a read lease for Holder.
	opLease = "lease"
)

// op is one operation of a batch.
type op struct {
	Kind    string `json:"k"`
	Key     []byte `json:"key,omitempty"`
	Version uint64 `json:"v,omitempty"` // the new version (put, cas, del)
	Expect  uint64 `json:"e,omitempty"` // cas: the version it must replace (0: absent)
	Rev     uint64 `json:"r,omitempty"` // the bucket revision that holds the new envelope
	Digest  []byte `json:"d,omitempty"` // sha256 of the new envelope
	Size    int    `json:"s,omitempty"` // the value's size, for the byte quota
	Prefix  []byte `json:"p,omitempty"`
	Start   []byte `json:"a,omitempty"`
	Limit   int    `json:"l,omitempty"`
	Tomb    bool   `json:"t,omitempty"` // cas: the new version is a tombstone
	// Holder names the worker-side handle (lease, and commits: a holder's
	// own lease never delays its writes).
	Holder string `json:"h,omitempty"`
}

// Result statuses.
const (
	stOK       = "ok"
	stConflict = "conflict" // Entry is the current entry
	stQuota    = "quota"
	stInvalid  = "invalid"
	stRetry    = "retry" // a commit waits RetryMS for other holders' leases
)

// result answers one op.
type result struct {
	Status string   `json:"st"`
	Entry  *entry   `json:"en,omitempty"` // get: current; put/cas/del: the one replaced; conflict: current
	Keys   [][]byte `json:"ks,omitempty"`
	More   bool     `json:"m,omitempty"`
	Msg    string   `json:"msg,omitempty"`
	// LeaseMS is the read lease granted (0: none).
	LeaseMS int64 `json:"lm,omitempty"`
	// RetryMS is how long a commit must wait before it is tried again.
	RetryMS int64 `json:"rm,omitempty"`
}

// entry is the anchor's record of one key.
type entry struct {
	Version uint64 `json:"v"`
	Rev     uint64 `json:"r"`
	Digest  []byte `json:"d"`
	Size    int    `json:"s"`
	Deleted bool   `json:"x,omitempty"`
}

func requestAAD(ns, name string) []byte {
	return []byte("cloister/v1/state-anchor-request\x00" + ns + "\x00" + name)
}

func replyAAD(ns, name string, reqNonce []byte) []byte {
	return append([]byte("cloister/v1/state-anchor-reply\x00"+ns+"\x00"+name+"\x00"), reqNonce...)
}

var errAnchorMessage = errors.New("anchor message does not authenticate")

// sealMessage seals the plaintext pt of an anchor message under a fresh
// random nonce.
func (k *keys) sealMessage(aad, pt []byte) (nonce, sealed []byte) {
	nonce = make([]byte, nonceSize)
	rand.Read(nonce)
	return nonce, k.anchor.Seal(pt[:0], nonce, pt, aad)
}

// openMessage authenticates an anchor message and returns its plaintext.
func (k *keys) openMessage(aad, nonce, sealed []byte) ([]byte, error) {
	if len(nonce) != nonceSize {
		return nil, errAnchorMessage
	}
	pt, err := k.anchor.Open(nil, nonce, sealed, aad)
	if err != nil {
		return nil, errAnchorMessage
	}
	return pt, nil
}
