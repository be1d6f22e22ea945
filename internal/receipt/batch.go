package receipt

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/cloister-faas/cloister/internal/certs"
)

// A worker sends its receipts to the ledger in batches, and signs each
// batch once with the key that signed the receipts. The coordinator
// verifies that one signature instead of one per receipt: a batch can only
// come from an admitted worker, so a host that forges, alters or injects a
// receipt breaks the batch signature. The receipts' own signatures are what
// clients and auditors check; they are logged unchanged.

// batchDomain separates batch signatures from receipt signatures.
const batchDomain = "cloister-receipt-batch-v1\n"

// ErrBatchSignature means a batch's signature does not verify with the key
// of the worker its receipts name.
var ErrBatchSignature = errors.New("receipt: batch signature does not verify")

// batchMessage is what a batch signature covers: the domain, then each
// entry length-prefixed, so that no two splits of the same bytes collide.
func batchMessage(entries [][]byte) []byte {
	h := sha256.New()
	var n [8]byte
	for _, e := range entries {
		binary.BigEndian.PutUint64(n[:], uint64(len(e)))
		h.Write(n[:])
		h.Write(e)
	}
	return append([]byte(batchDomain), h.Sum(nil)...)
}

// SignBatch signs entries (each a Signed receipt's Entry) with the worker key.
func SignBatch(entries [][]byte, key ed25519.PrivateKey) []byte {
	return ed25519.Sign(key, batchMessage(entries))
}

// VerifyBatch checks a batch of entries signed with SignBatch by the
// worker whose certificate is cert: the certificate must chain to the
// coordinator and be valid at now, and the signature must verify with its
// signing key. The entries themselves are not decoded: the worker is
// attested code, and auditors verify every receipt in the log on its own.
func (v *Verifier) VerifyBatch(cert certs.Signed, entries [][]byte, sig []byte, now time.Time) (*certs.Worker, error) {
	if len(entries) == 0 {
		return nil, fmt.Errorf("%w: empty batch", ErrMalformed)
	}
	w, err := v.openWorker(cert, v.coordinator)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrChain, err)
	}
	if err := w.ValidAt(now); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrChain, err)
	}
	if !ed25519.Verify(w.SigningKey, batchMessage(entries), sig) {
		return nil, ErrBatchSignature
	}
	return w, nil
}
