package receipt_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/cloister-faas/cloister/internal/receipt"
)

// TestVerifyBatch: a batch signed by the worker verifies under its
// certificate; any change to an entry, to their order or split, another
// signer, a certificate the coordinator did not sign, or one expired at
// the time of the append is refused.
func TestVerifyBatch(t *testing.T) {
	w := workerCert()
	cert := issue(t, coordinator, w)
	var entries [][]byte
	for i := range 3 {
		r := testReceipt()
		r.InvocationID = fmt.Sprint("inv-", i)
		e, err := signReceipt(t, r).Entry()
		if err != nil {
			t.Fatal(err)
		}
		entries = append(entries, e)
	}
	sig := receipt.SignBatch(entries, workerKey)
	v := receipt.NewVerifier(pub(1))
	now := w.NotBefore.Add(time.Minute)
	got, err := v.VerifyBatch(cert, entries, sig, now)
	if err != nil || got.WorkerID != w.WorkerID {
		t.Fatalf("VerifyBatch: %+v, %v", got, err)
	}
	altered := append([][]byte{}, entries...)
	altered[1] = append(append([]byte{}, entries[1][:len(entries[1])-1]...), ' ')
	split := [][]byte{append(append([]byte{}, entries[0]...), entries[1]...), entries[2]}
	expired := w
	expired.NotAfter = now.Add(-time.Second)
	for _, c := range []struct {
		name    string
		entries [][]byte
		sig     []byte
		certBy  bool // the certificate is issued by the coordinator
		expired bool
		want    error
	}{
		{"altered entry", altered, sig, true, false, receipt.ErrBatchSignature},
		{"reordered", [][]byte{entries[1], entries[0], entries[2]}, sig, true, false, receipt.ErrBatchSignature},
		{"entries joined", split, sig, true, false, receipt.ErrBatchSignature},
		{"dropped entry", entries[:2], sig, true, false, receipt.ErrBatchSignature},
		{"another signer", entries, receipt.SignBatch(entries, key(11)), true, false, receipt.ErrBatchSignature},
		{"certificate not by the coordinator", entries, sig, false, false, receipt.ErrChain},
		{"certificate expired", entries, sig, true, true, receipt.ErrChain},
		{"empty batch", nil, sig, true, false, receipt.ErrMalformed},
	} {
		c2 := cert
		switch {
		case !c.certBy:
			c2 = issue(t, key(2), w)
		case c.expired:
			c2 = issue(t, coordinator, expired)
		}
		if _, err := v.VerifyBatch(c2, c.entries, c.sig, now); !errors.Is(err, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.want)
		}
	}
}
