package worker

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/bus"
	"github.com/cloister-faas/cloister/internal/certs"
	"github.com/cloister-faas/cloister/internal/wire"
)

// AdvertiseInterval is how often a worker advertises its status.
const AdvertiseInterval = 2 * time.Second

// checkTEEPolicy refuses a function whose policy this worker's certified
// TEE does not satisfy. The coordinator would refuse the key too; checking
// here gives the clear error before any work.
func checkTEEPolicy(w *certs.Worker, fc *certs.Function) error {
	if err := fc.Admits(w); err != nil {
		return apierr.Wrap(apierr.TEEPolicy, err)
	}
	return nil
}

// status is this worker's advertisement.
func (w *Worker) status() wire.WorkerStatus {
	a := w.cert.Load()
	st := wire.WorkerStatus{WorkerID: w.cfg.ID, Certificate: a.signed, Capacity: w.cfg.Concurrency,
		Free: max(0, w.cfg.Concurrency-int(w.inflight.Load()))}
	w.fns.Range(func(k, _ any) bool {
		st.Warm = append(st.Warm, k.(string))
		return true
	})
	slices.Sort(st.Warm)
	return st
}

func (w *Worker) advertise() {
	if w.revoked.Load() || !w.ready.Load() {
		return
	}
	if b, err := json.Marshal(w.status()); err == nil {
		// Best effort: the next tick advertises again.
		_ = w.cfg.Conn.Publish(bus.SubjectWorkerStatus, b)
	}
}

// runScheduling serves this worker's own invoke subject, advertises its
// status every AdvertiseInterval and on a gateway's ping, and re-admits
// when the coordinator announces a manifest change. It returns a stop
// function.
func (w *Worker) runScheduling(ctx context.Context) (func(), error) {
	direct, err := bus.ServeCalls(ctx, w.cfg.Conn, bus.WorkerSubject(w.cfg.ID), "", w.serveLimit(), w.log, w.handleInvoke)
	if err != nil {
		return nil, err
	}
	ping, err := w.cfg.Conn.Subscribe(bus.SubjectWorkersPing, func(*nats.Msg) { w.advertise() })
	if err != nil {
		return nil, err
	}
	readmit := make(chan struct{}, 1)
	changed, err := w.cfg.Conn.Subscribe(bus.SubjectManifestChanged, func(*nats.Msg) {
		select {
		case readmit <- struct{}{}:
		default:
		}
	})
	if err != nil {
		return nil, err
	}
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		t := time.NewTicker(AdvertiseInterval)
		defer t.Stop()
		w.advertise()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				w.advertise()
			case <-readmit:
				err := w.admit(ctx)
				var ae *apierr.Error
				switch {
				case err == nil:
					w.revoked.Store(false)
					w.advertise()
				case errors.As(err, &ae) && ae.Code == apierr.Forbidden:
					// The new manifest no longer accepts this worker.
					w.revoked.Store(true)
					w.log.Warn("revoked: the new manifest does not admit this worker", "err", err)
				default:
					w.log.Warn("re-admission after a manifest change failed; will retry at renewal", "err", err)
				}
			}
		}
	}()
	return func() {
		close(done)
		<-stopped
		// Fails only on a closed connection, which drops them anyway.
		_ = changed.Unsubscribe()
		_ = ping.Unsubscribe() // as above
		// Wait (briefly) until the server has dropped the worker's own
		// subject, so that gateways stop reaching it.
		if direct.Drain() == nil {
			for i := 0; i < 500 && direct.IsValid(); i++ {
				time.Sleep(10 * time.Millisecond)
			}
		}
	}, nil
}
