package worker

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloister-faas/cloister/internal/bus"
	"github.com/cloister-faas/cloister/internal/bus/bustest"
	"github.com/cloister-faas/cloister/internal/certs"
	"github.com/cloister-faas/cloister/internal/receipt"
	"github.com/cloister-faas/cloister/internal/wire"
)

// fakeLedger answers ledger appends on its own bus once release is
// closed, as the coordinator does once a batch is durable, and records
// what it got.
type fakeLedger struct {
	release chan struct{}
	pending atomic.Int64 // requests received, not yet answered
	mu      sync.Mutex
	batches [][][]byte
	seen    map[string]int
}

func (f *fakeLedger) handle(key ed25519.PrivateKey) bus.BytesHandler {
	return func(_ context.Context, b []byte) ([]byte, error) {
		var req wire.LedgerAppendRequest
		if err := req.UnmarshalBinary(b); err != nil {
			return nil, err
		}
		f.pending.Add(1)
		defer f.pending.Add(-1)
		<-f.release
		// Ed25519 is deterministic: the worker's signature is this one.
		if !bytes.Equal(req.Signature, receipt.SignBatch(req.Receipts, key)) {
			return nil, errors.New("the batch signature does not verify")
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		f.batches = append(f.batches, req.Receipts)
		idx := make([]uint64, len(req.Receipts))
		for i, e := range req.Receipts {
			f.seen[string(e)]++
			idx[i] = uint64(len(f.seen))
		}
		return (&wire.LedgerAppendResponse{Indices: idx}).MarshalBinary()
	}
}

// TestLedgerAppenders: receipts go out in batches, without waiting for a
// batch in flight to be acknowledged, each exactly once, a batch never
// mixing certificates; stopping sends what is queued and waits for it.
func TestLedgerAppenders(t *testing.T) {
	nc := bustest.Connect(t)
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f := &fakeLedger{seen: map[string]int{}, release: make(chan struct{})}
	if _, err := bus.ServeBytes(ctx, nc, bus.SubjectLedgerAppend, bus.CoordinatorQueue, 1024, slog.New(slog.DiscardHandler), f.handle(key)); err != nil {
		t.Fatal(err)
	}
	w := &Worker{cfg: Config{Conn: nc, Ledger: true}, log: slog.New(slog.DiscardHandler), signKey: key,
		appends: make(chan *receipt.Signed, ledgerQueue), ledger: newLedgerMetrics()}
	certA := certs.Signed{Body: []byte("cert A"), Signature: []byte("sig A")}
	certB := certs.Signed{Body: []byte("cert B"), Signature: []byte("sig B")}
	stop := make(chan struct{})
	done := w.runAppenders(ctx, stop)
	n := 0
	log := func(cert certs.Signed) {
		w.logReceipt(ctx, &receipt.Signed{Receipt: fmt.Appendf(nil, `{"n":%d}`, n), Signature: []byte("s"), WorkerCert: cert})
		n++
	}

	// While the ledger holds every batch, receipts that arrive one by one
	// still go out, each batch on its own: none waits for another's answer.
	const trickle = 40
	for range trickle {
		log(certA)
		time.Sleep(2 * ledgerLinger)
	}
	for deadline := time.Now().Add(20 * time.Second); f.pending.Load() < trickle; {
		if time.Now().After(deadline) {
			t.Fatalf("%d batches in flight while the ledger holds them, want %d", f.pending.Load(), trickle)
		}
		time.Sleep(5 * time.Millisecond)
	}
	// A burst is batched, and split where the worker renewed its
	// certificate.
	const burst = 1000
	for i := range burst {
		if i < burst/2 {
			log(certA)
		} else {
			log(certB)
		}
	}
	close(f.release)
	close(stop)
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the appenders did not stop")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.seen) != n {
		t.Fatalf("the ledger got %d distinct receipts, want %d", len(f.seen), n)
	}
	for e, c := range f.seen {
		if c != 1 {
			t.Fatalf("receipt %s logged %d times", e, c)
		}
	}
	if len(f.batches) > trickle+burst/10 {
		t.Errorf("%d batches for %d receipts: the burst was not batched", len(f.batches), n)
	}
	for _, b := range f.batches {
		if len(b) > ledgerBatchMax {
			t.Errorf("a batch of %d receipts, limit %d", len(b), ledgerBatchMax)
		}
		for _, e := range b[1:] {
			if certOf(t, e) != certOf(t, b[0]) {
				t.Fatal("a batch mixes certificates")
			}
		}
	}
}

func certOf(t *testing.T, entry []byte) string {
	t.Helper()
	var s receipt.Signed
	if err := json.Unmarshal(entry, &s); err != nil {
		t.Fatal(err)
	}
	return string(s.WorkerCert.Body)
}
