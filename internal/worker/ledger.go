package worker

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/bus"
	"github.com/cloister-faas/cloister/internal/receipt"
	"github.com/cloister-faas/cloister/internal/wire"
)

// ledgerQueue bounds the receipts waiting to be logged; a full queue slows
// invocations down rather than dropping receipts.
const ledgerQueue = 4096

// ledgerAppenders is how many appends are in flight to the coordinator.
// Each waits for its batch to be durable (up to the ledger's batch age), so
// throughput is about ledgerAppenders / batch age.
const ledgerAppenders = 256

type ledgerMetrics struct {
	appended, failed prometheus.Counter
}

func newLedgerMetrics() ledgerMetrics {
	return ledgerMetrics{
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

// runAppenders sends queued receipts to the coordinator. Once stop is
// closed they log what is still queued and return (done is closed then).
// The queue itself is never closed, so a late invocation cannot panic.
func (w *Worker) runAppenders(ctx context.Context, stop <-chan struct{}) chan struct{} {
	done := make(chan struct{})
	finished := make(chan struct{}, ledgerAppenders)
	for range ledgerAppenders {
		go func() {
			defer func() { finished <- struct{}{} }()
			for {
				select {
				case s := <-w.appends:
					w.appendOne(ctx, s)
					continue
				case <-stop:
				}
				for {
					select {
					case s := <-w.appends:
						w.appendOne(ctx, s)
					default:
						return
					}
				}
			}
		}()
	}
	go func() {
		for range ledgerAppenders {
			<-finished
		}
		close(done)
	}()
	return done
}

func (w *Worker) appendOne(ctx context.Context, s *receipt.Signed) {
	backoff := 50 * time.Millisecond
	for attempt := range 6 {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		var resp wire.LedgerAppendResponse
		err := bus.Call(cctx, w.cfg.Conn, bus.SubjectLedgerAppend, s, &resp)
		cancel()
		if err == nil {
			w.ledger.appended.Inc()
			return
		}
		if c := apierr.CodeOf(err); attempt == 5 || c == apierr.Forbidden || c == apierr.BadRequest {
			w.ledger.failed.Inc()
			w.log.Error("logging a receipt failed", "err", err)
			return
		}
		time.Sleep(backoff)
		backoff *= 2
	}
}
