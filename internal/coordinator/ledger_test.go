package coordinator

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/bus"
	"github.com/cloister-faas/cloister/internal/certs"
	"github.com/cloister-faas/cloister/internal/receipt"
	"github.com/cloister-faas/cloister/internal/wire"
)

// signedReceipt makes a receipt for worker (its certificate and key) as a
// worker would, and returns its ledger entry.
func (f *fixture) signedReceipt(t *testing.T, cert certs.Signed, key ed25519.PrivateKey, n int) []byte {
	t.Helper()
	w, err := certs.OpenWorker(cert, f.c.IdentityKey())
	if err != nil {
		t.Fatal(err)
	}
	instr := uint64(1000 + n)
	r := &receipt.Receipt{
		Version: receipt.Version, InvocationID: fmt.Sprintf("inv-%d", n), Namespace: "ns", Function: "fn", FunctionVersion: 1,
		CodeHash: "c", BundleHash: "b", Mode: wire.ModeHPKE, RequestHash: "q", ResponseHash: "r", Status: "ok",
		Metering: receipt.Metering{Instructions: &instr},
		TEE:      receipt.TEE{Kind: w.TEE, Measurement: w.Measurement, TCB: w.TCB}, WorkerID: w.WorkerID, Time: f.now,
	}
	s, err := receipt.Sign(r, key, cert)
	if err != nil {
		t.Fatal(err)
	}
	e, err := s.Entry()
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// TestLedgerAppendBatch: a worker's signed batch is logged in order; sent
// again it keeps its indices (no duplicate); a host cannot log a batch it
// altered, forged or signed itself, nor one under a certificate that does
// not chain to the coordinator; malformed requests get bad_request.
func TestLedgerAppendBatch(t *testing.T) {
	f := setup(t)
	call := func(cert certs.Signed, entries [][]byte, sig []byte) (*wire.LedgerAppendResponse, error) {
		req := wire.LedgerAppendRequest{WorkerCert: cert, Signature: sig, Receipts: entries}
		body, err := req.MarshalBinary()
		if err != nil {
			return nil, err
		}
		out, err := bus.CallBytes(context.Background(), f.nc, bus.SubjectLedgerAppend, body)
		if err != nil {
			return nil, err
		}
		var resp wire.LedgerAppendResponse
		return &resp, resp.UnmarshalBinary(out)
	}
	resp, key, err := f.admit(f.backend, nil)
	if err != nil {
		t.Fatal(err)
	}
	cert := resp.Certificate
	var batch [][]byte
	for i := range 5 {
		batch = append(batch, f.signedReceipt(t, cert, key, i))
	}
	got, err := call(cert, batch, receipt.SignBatch(batch, key))
	if err != nil || len(got.Indices) != len(batch) {
		t.Fatalf("logging a batch: %v %+v", err, got)
	}
	for i, idx := range got.Indices {
		if idx != uint64(i) {
			t.Errorf("receipt %d: index %d", i, idx)
		}
	}
	// A retry (the worker timed out waiting) keeps the indices.
	again, err := call(cert, batch[2:4], receipt.SignBatch(batch[2:4], key))
	if err != nil || len(again.Indices) != 2 || again.Indices[0] != 2 || again.Indices[1] != 3 {
		t.Errorf("re-logging: %v %+v, want indices 2 and 3", err, again)
	}
	// Acknowledged once in the journal; the tile log follows.
	for start := time.Now(); ; time.Sleep(20 * time.Millisecond) {
		size, err := f.c.ledger.IntegratedSize(context.Background())
		if err == nil && size == 5 {
			break
		}
		if time.Since(start) > 10*time.Second {
			t.Fatalf("log size %d (%v), want 5", size, err)
		}
	}

	// The host alters a receipt's metering after the worker signed the
	// batch: the batch no longer verifies.
	altered := append([][]byte{}, batch...)
	var s receipt.Signed
	if err := json.Unmarshal(altered[1], &s); err != nil {
		t.Fatal(err)
	}
	s.Receipt = bytes.Replace(s.Receipt, []byte(`"instructions":1001`), []byte(`"instructions":1`), 1)
	if altered[1], err = s.Entry(); err != nil || bytes.Equal(altered[1], batch[1]) {
		t.Fatalf("altering the receipt: %v", err)
	}
	_, hostKey, _ := ed25519.GenerateKey(rand.Reader)
	other, otherKey, err := f.admit(f.backend, nil)
	if err != nil {
		t.Fatal(err)
	}
	forgedCert := cert
	forgedCert.Signature = ed25519.Sign(hostKey, cert.Body)
	for _, c := range []struct {
		name    string
		cert    certs.Signed
		entries [][]byte
		sig     []byte
	}{
		{"an altered receipt", cert, altered, receipt.SignBatch(batch, key)},
		{"a batch signed by a key that is not the worker's", cert, batch, receipt.SignBatch(batch, hostKey)},
		{"another admitted worker's signature under this worker's certificate", cert, batch, receipt.SignBatch(batch, otherKey)},
		{"a certificate the coordinator did not sign", forgedCert, batch, receipt.SignBatch(batch, key)},
		{"no signature", cert, batch, nil},
	} {
		if _, err := call(c.cert, c.entries, c.sig); codeOf(err) != apierr.Forbidden {
			t.Errorf("%s: got %v, want forbidden", c.name, err)
		}
	}
	// The other worker's own batch is fine.
	ob := [][]byte{f.signedReceipt(t, other.Certificate, otherKey, 9)}
	if got, err := call(other.Certificate, ob, receipt.SignBatch(ob, otherKey)); err != nil || len(got.Indices) != 1 || got.Indices[0] != 5 {
		t.Errorf("another worker's batch: %v %+v", err, got)
	}
	empty, _ := (&wire.LedgerAppendRequest{}).MarshalBinary()
	good, _ := (&wire.LedgerAppendRequest{WorkerCert: cert, Receipts: batch, Signature: receipt.SignBatch(batch, key)}).MarshalBinary()
	for name, bad := range map[string][]byte{
		"no receipts": empty, "JSON": []byte(`{"receipts":[]}`), "truncated": good[:len(good)-3], "nothing": nil,
	} {
		if _, err := bus.CallBytes(context.Background(), f.nc, bus.SubjectLedgerAppend, bad); codeOf(err) != apierr.BadRequest {
			t.Errorf("append %s: got %v, want bad_request", name, err)
		}
	}

	// Lookups by entry hash answer the first index, and not_found for
	// what was never logged.
	for i, e := range batch {
		sum := sha256.Sum256(e)
		out, err := bus.CallBytes(context.Background(), f.nc, bus.SubjectLedgerLookup, sum[:])
		if err != nil || len(out) != 8 || binary.BigEndian.Uint64(out) != uint64(i) {
			t.Errorf("lookup of receipt %d: %x %v", i, out, err)
		}
	}
	missing := sha256.Sum256([]byte("never logged"))
	if _, err := bus.CallBytes(context.Background(), f.nc, bus.SubjectLedgerLookup, missing[:]); codeOf(err) != apierr.NotFound {
		t.Errorf("lookup of a receipt never logged: %v, want not_found", err)
	}
	if _, err := bus.CallBytes(context.Background(), f.nc, bus.SubjectLedgerLookup, []byte("short")); codeOf(err) != apierr.BadRequest {
		t.Errorf("lookup of a short hash: %v, want bad_request", err)
	}
}
