package worker

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/bus"
	"github.com/cloister-faas/cloister/internal/certs"
	"github.com/cloister-faas/cloister/internal/receipt"
	"github.com/cloister-faas/cloister/internal/wire"
)

// ledgerQueue bounds the receipts waiting to be logged; a full queue slows
// invocations down rather than dropping receipts.
const ledgerQueue = 4096

// ledgerInFlight bounds the batches sent to the coordinator and not yet
// acknowledged. Each waits for its batch to be durable (up to the ledger's
// batch age, coordinator.LedgerBatchAge); the bound is there for a ledger
// that stops answering, not for throughput: at the ledger's batch age and
// ledgerLinger it allows hundreds of thousands of receipts per second.
const ledgerInFlight = 256

// ledgerLinger is how long a batch waits for more receipts after its first
// before it is sent, so that under load one bus request (one signature,
// one check at the coordinator) carries many receipts. A receipt thus
// waits at most this plus the ledger's batch age to be logged.
const ledgerLinger = 20 * time.Millisecond

// ledgerBatchMax and ledgerBatchBytes bound one append request (the bus's
// payload limit is 1 MiB).
const (
	ledgerBatchMax   = 256
	ledgerBatchBytes = 512 << 10
)

type ledgerMetrics struct {
	appended, failed prometheus.Counter
	// warned is when (Unix ns) a batch last logged that the coordinator
	// does not acknowledge: once per ledgerWarnEvery, not per batch.
	warned *atomic.Int64
}

const ledgerWarnEvery = 10 * time.Second

func newLedgerMetrics() ledgerMetrics {
	return ledgerMetrics{
		warned: new(atomic.Int64),
		appended: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cloister_worker_ledger_appends_total", Help: "Receipts the coordinator acknowledged into the ledger.",
		}),
		failed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cloister_worker_ledger_append_failures_total", Help: "Receipts that could not be logged after retries.",
		}),
	}
}

// logReceipt queues a signed receipt for the ledger. It blocks while the
// queue is full, until ctx ends.
func (w *Worker) logReceipt(ctx context.Context, s *receipt.Signed) {
	if !w.cfg.Ledger {
		return
	}
	select {
	case w.appends <- s:
	case <-ctx.Done():
		w.ledger.failed.Inc()
	}
}

// runAppenders sends queued receipts to the coordinator in batches, each
// in its own goroutine (up to ledgerInFlight), so that a receipt never
// waits for another batch to be acknowledged before it is sent. Once stop
// is closed it sends what is still queued, waits for every batch in
// flight and closes the returned channel. The queue itself is never
// closed, so a late invocation cannot panic.
func (w *Worker) runAppenders(ctx context.Context, stop <-chan struct{}) chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		var wg sync.WaitGroup
		defer wg.Wait()
		slots := make(chan struct{}, ledgerInFlight)
		var next *receipt.Signed // a receipt that did not fit the last batch
		for {
			first := next
			stopping := false
			if first == nil {
				select {
				case first = <-w.appends:
				case <-stop:
					stopping = true
					select {
					case first = <-w.appends:
					default:
						return
					}
				}
			}
			var b *ledgerBatch
			b, next = w.fillBatch(first, stop, stopping)
			slots <- struct{}{}
			wg.Go(func() {
				defer func() { <-slots }()
				w.appendBatch(ctx, b)
			})
		}
	}()
	return done
}

// ledgerBatch is receipts signed under one worker certificate.
type ledgerBatch struct {
	cert    certs.Signed
	entries [][]byte
}

// fillBatch starts a batch with first and adds what is queued or arrives
// within ledgerLinger (not waiting once stop is closed), up to the
// batch's bounds. A queued receipt signed under another certificate (the
// worker renewed it) ends the batch and is returned to start the next.
func (w *Worker) fillBatch(first *receipt.Signed, stop <-chan struct{}, stopping bool) (*ledgerBatch, *receipt.Signed) {
	b := &ledgerBatch{cert: first.WorkerCert, entries: make([][]byte, 0, 16)}
	size := 0
	add := func(s *receipt.Signed) {
		e, err := s.Entry()
		if err != nil {
			w.ledger.failed.Inc()
			w.log.Error("encoding a receipt for the ledger", "err", err)
			return
		}
		b.entries = append(b.entries, e)
		size += len(e)
	}
	add(first)
	var linger <-chan time.Time
	if !stopping {
		t := time.NewTimer(ledgerLinger)
		defer t.Stop()
		linger = t.C
	}
	for len(b.entries) < ledgerBatchMax && size < ledgerBatchBytes {
		var s *receipt.Signed
		select {
		case s = <-w.appends:
		default:
			select {
			case s = <-w.appends:
			case <-linger:
				return b, nil
			case <-stop:
				if !stopping {
					stopping, linger = true, nil
					continue
				}
				return b, nil
			}
		}
		if !bytes.Equal(s.WorkerCert.Signature, b.cert.Signature) {
			return b, s
		}
		add(s)
	}
	return b, nil
}

// ledgerRetryFor is how long a worker keeps sending a batch that the
// coordinator did not acknowledge: longer than a coordinator failover
// (about 5 s) or a NATS election, so that neither loses receipts.
const ledgerRetryFor = 2 * time.Minute

// ledgerRetryStopping is how long it keeps trying once the worker is
// stopping, so that a stop is not held for minutes by a coordinator that
// does not answer.
const ledgerRetryStopping = 15 * time.Second

// appendBatch signs and sends one batch, retrying with backoff (at most
// 2 s apart) until it is logged, the coordinator refuses it, or
// ledgerRetryFor has passed. The coordinator dedupes a retried receipt by
// its entry hash.
func (w *Worker) appendBatch(ctx context.Context, b *ledgerBatch) {
	if len(b.entries) == 0 {
		return
	}
	entries := b.entries
	req := wire.LedgerAppendRequest{WorkerCert: b.cert, Receipts: entries, Signature: receipt.SignBatch(entries, w.signKey)}
	body, err := req.MarshalBinary()
	if err != nil {
		w.ledger.failed.Add(float64(len(entries)))
		w.log.Error("encoding a ledger batch", "receipts", len(entries), "err", err)
		return
	}
	backoff := 50 * time.Millisecond
	start := time.Now()
	giveUp := start.Add(ledgerRetryFor)
	for attempt := 0; ; attempt++ {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		var resp wire.LedgerAppendResponse
		out, err := bus.CallBytes(cctx, w.cfg.Conn, bus.SubjectLedgerAppend, body)
		cancel()
		if err == nil {
			if err = resp.UnmarshalBinary(out); err == nil && len(resp.Indices) != len(entries) {
				err = fmt.Errorf("the coordinator answered %d indices for %d receipts", len(resp.Indices), len(entries))
			}
		}
		if err == nil {
			w.ledger.appended.Add(float64(len(entries)))
			return
		}
		stopped := ctx.Err() != nil && time.Since(start) > ledgerRetryStopping
		if c := apierr.CodeOf(err); time.Now().After(giveUp) || stopped || c == apierr.Forbidden || c == apierr.BadRequest {
			w.ledger.failed.Add(float64(len(entries)))
			w.log.Error("logging receipts failed", "receipts", len(entries), "attempts", attempt+1, "err", err)
			return
		}
		if last := w.ledger.warned.Load(); attempt >= 3 && time.Since(time.Unix(0, last)) >= ledgerWarnEvery && w.ledger.warned.CompareAndSwap(last, time.Now().UnixNano()) {
			w.log.Warn("logging receipts: the coordinator does not acknowledge; still trying", "receipts", len(entries), "err", err)
		}
		time.Sleep(backoff)
		backoff = min(2*backoff, 2*time.Second)
	}
}
