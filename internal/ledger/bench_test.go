package ledger_test

import (
	"context"
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloister-faas/cloister/internal/ledger"
)

// Entry sizes measured from package receipt: a fully populated canonical
// receipt plus its signature is about 1.1 KB; with the worker certificate
// (receipt.Signed as JSON) about 2.3 KB.
const receiptSize = 1100

// BenchmarkLedgerAppend measures durable, batched appends from many
// goroutines: each Append returns once its batch is written and fsynced.
// Goal: ≥ 50,000 entries/s.
func BenchmarkLedgerAppend(b *testing.B) {
	for _, size := range []int{512, receiptSize, 2300} {
		b.Run(fmt.Sprintf("entry=%dB", size), func(b *testing.B) {
			s, _ := signer(b, 1)
			l, err := ledger.Open(context.Background(), ledger.Options{Dir: b.TempDir(), Signer: s, Logger: quietLogger()})
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close(context.Background())
			ctx := context.Background()
			// Enough appenders in flight to fill a batch while the previous one is written.
			b.SetParallelism(2 * ledger.DefaultBatchMaxSize / runtime.GOMAXPROCS(0))
			b.SetBytes(int64(size))
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				e := make([]byte, size)
				var n uint64
				for pb.Next() {
					binary.BigEndian.PutUint64(e, n)
					n++
					if _, err := l.Append(ctx, e); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "entries/s")
		})
	}
	for _, size := range []int{receiptSize, 2300} {
		b.Run(fmt.Sprintf("batch=%d/entry=%dB", sendBatch, size), func(b *testing.B) {
			s, _ := signer(b, 1)
			l, err := ledger.Open(context.Background(), ledger.Options{Dir: b.TempDir(), Signer: s, Logger: quietLogger()})
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close(context.Background())
			b.SetBytes(int64(size))
			start := time.Now()
			b.ResetTimer()
			sendBatches(b, l, 0, int64(b.N), size)
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "entries/s")
		})
	}
}

// As the coordinator appends: a worker's batch of receipts at a time
// (AppendBatch), with as many batches in flight as four workers keep (8
// each), enough to fill a ledger batch while the previous one is written.
const senders, sendBatch = 32, 256

// sendBatches appends entries from to from+n (each of size bytes, starting
// with its number) in batches of sendBatch from senders goroutines.
func sendBatches(b *testing.B, l *ledger.Log, from, n int64, size int) {
	ctx := context.Background()
	var next atomic.Int64
	next.Store(from)
	var wg sync.WaitGroup
	for range senders {
		wg.Go(func() {
			entries := make([][]byte, 0, sendBatch)
			for {
				first := next.Add(sendBatch) - sendBatch
				if first >= from+n {
					return
				}
				entries = entries[:0]
				for i := first; i < min(first+sendBatch, from+n); i++ {
					e := make([]byte, size)
					binary.BigEndian.PutUint64(e, uint64(i))
					entries = append(entries, e)
				}
				if _, err := l.AppendBatch(ctx, entries); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// BenchmarkLedgerJournal compares AppendBatch file-only and with the
// journal (an embedded NATS server, one replica, on the same disk), in
// the same run: each iteration sends the same receipts to both logs.
// With the journal an append is answered once journaled, and the local
// log integrates it in the background; "integrated" also counts the time
// until the local log holds every entry (so that the next iteration does
// not compete with a backlog). journal/file is the ratio of the
// acknowledged rates.
func BenchmarkLedgerJournal(b *testing.B) {
	const round = 16384
	ctx := context.Background()
	opts := ledger.Options{Signer: mustSigner(b, 1), Logger: quietLogger()}
	opts.Dir = b.TempDir()
	file, err := ledger.Open(ctx, opts)
	if err != nil {
		b.Fatal(err)
	}
	defer file.Close(ctx)
	opts.Dir, opts.Journal = b.TempDir(), &ledger.JournalOptions{JS: newJS(b), Replicas: 1, Key: journalKey}
	journaled, err := ledger.Open(ctx, opts)
	if err != nil {
		b.Fatal(err)
	}
	defer journaled.Close(ctx)
	var n int64
	var tFile, tJournal, tIntegrated time.Duration
	for b.Loop() {
		start := time.Now()
		sendBatches(b, file, n, round, receiptSize)
		tFile += time.Since(start)
		start = time.Now()
		sendBatches(b, journaled, n, round, receiptSize)
		tJournal += time.Since(start)
		n += round
		for {
			size, err := journaled.IntegratedSize(ctx)
			if err != nil {
				b.Fatal(err)
			}
			if size >= uint64(n) {
				break
			}
			time.Sleep(time.Millisecond)
		}
		tIntegrated += time.Since(start)
	}
	b.ReportMetric(float64(n)/tFile.Seconds(), "file-entries/s")
	b.ReportMetric(float64(n)/tJournal.Seconds(), "journal-entries/s")
	b.ReportMetric(float64(n)/tIntegrated.Seconds(), "integrated-entries/s")
	b.ReportMetric(tFile.Seconds()/tJournal.Seconds(), "journal/file")
}

// buildAuditLog writes a log of n entries, each an Ed25519 signature over a
// receipt-sized message, so that the audit's check can do the work of
// receipt verification.
func buildAuditLog(b *testing.B, n int) string {
	dir, err := os.MkdirTemp("", "ledger-audit-bench-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	s, _ := signer(b, 1)
	l, err := ledger.Open(context.Background(), ledger.Options{Dir: dir, Signer: s, BatchMaxSize: 16384, Logger: quietLogger()})
	if err != nil {
		b.Fatal(err)
	}
	k := key(5)
	start := time.Now()
	ctx := context.Background()
	futures := make([]ledger.Future, 0, 65536)
	flush := func() {
		for _, f := range futures {
			if _, err := f(); err != nil {
				b.Fatal(err)
			}
		}
		futures = futures[:0]
	}
	for i := range n {
		msg := make([]byte, receiptSize-ed25519.SignatureSize)
		binary.BigEndian.PutUint64(msg, uint64(i))
		e := append(ed25519.Sign(k, msg), msg...)
		futures = append(futures, l.AppendAsync(ctx, e))
		if len(futures) == cap(futures) {
			flush()
		}
	}
	flush()
	if err := l.Close(ctx); err != nil {
		b.Fatal(err)
	}
	b.Logf("built a log of %d entries in %v", n, time.Since(start))
	return dir
}

var errBadEntrySig = errors.New("bad entry signature")

// BenchmarkAudit measures a full audit: read every bundle, hash every leaf,
// recompute the root and compare it with the signed checkpoint; "verify"
// also checks an Ed25519 signature per entry, like receipt verification.
// Goal: 1,000,000 entries in ≤ 30 s. CLOISTER_LEDGER_AUDIT_N sets the log
// size (default 200,000).
func BenchmarkAudit(b *testing.B) {
	n := 200_000
	if s := os.Getenv("CLOISTER_LEDGER_AUDIT_N"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil {
			b.Fatal(err)
		}
	}
	dir := buildAuditLog(b, n)
	pub := key(5).Public().(ed25519.PublicKey)
	r := ledger.NewReader(ledger.DirSource(dir), signerVerifier(b, 1), origin)
	for _, tc := range []struct {
		name  string
		check ledger.CheckFunc
	}{
		{"hash-only", nil},
		{"verify", func(_ uint64, e []byte) error {
			if !ed25519.Verify(pub, e[ed25519.SignatureSize:], e[:ed25519.SignatureSize]) {
				return errBadEntrySig
			}
			return nil
		}},
	} {
		b.Run(fmt.Sprintf("%s/n=%d", tc.name, n), func(b *testing.B) {
			b.SetBytes(int64(n) * receiptSize)
			start := time.Now()
			for b.Loop() {
				rep, err := r.Audit(context.Background(), 0, tc.check, nil)
				if err != nil || rep.Entries != uint64(n) {
					b.Fatalf("audit: %v, %d entries", err, rep.Entries)
				}
			}
			perSec := float64(n) * float64(b.N) / time.Since(start).Seconds()
			b.ReportMetric(perSec, "entries/s")
			b.ReportMetric(1e6/perSec, "s/1M-entries")
		})
	}
}
