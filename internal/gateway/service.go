package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/bundle"
	"github.com/cloister-faas/cloister/internal/bus"
	"github.com/cloister-faas/cloister/internal/registry"
	"github.com/cloister-faas/cloister/internal/wire"
)

func (g *Gateway) lookup(ctx context.Context, ns, name string, version int) (*registry.Record, error) {
	rec, err := g.reg.Get(ctx, ns, name, version)
	if errors.Is(err, registry.ErrNotFound) {
		return nil, apierr.New(apierr.NotFound, "function %q (version %s) not found in namespace %q", name, versionString(version), ns)
	}
	if err != nil {
		return nil, storeError("registry", err)
	}
	return rec, nil
}

// storeError maps a failure to reach an untrusted store (a timeout, a lost
// NATS connection) to unavailable, which callers may retry; errors that
// already have a code keep it.
func storeError(what string, err error) error {
	var ae *apierr.Error
	if errors.As(err, &ae) {
		return err
	}
	return apierr.Wrap(apierr.Unavailable, fmt.Errorf("%s unavailable: %w", what, err))
}

// route forwards an invocation to a worker and waits for its reply.
func (g *Gateway) route(ctx context.Context, rec *registry.Record, req *wire.InvokeRequest) (*wire.InvokeReply, error) {
	var m bundle.Manifest
	// The coordinator validated the manifest at deploy; a zero limit only
	// leaves the margin.
	_ = json.Unmarshal(rec.Manifest, &m)
	timeout := time.Duration(m.Limits.TimeoutMS)*time.Millisecond + 30*time.Second
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var rep wire.InvokeReply
	for attempt := 0; ; attempt++ {
		subject, err := g.pick(ctx, rec)
		if err != nil {
			return nil, err
		}
		err = g.callWorker(ctx, subject, req, &rep)
		// A worker that stopped since its last advertisement (gone, or
		// stopping): forget it and pick again. Nothing ran, so nothing is
		// repeated.
		if code := apierr.CodeOf(err); (code == apierr.NoWorker || code == apierr.Unavailable) && subject != bus.SubjectInvoke && attempt < 2 {
			g.pool.forget(strings.TrimPrefix(subject, bus.SubjectInvokeWorker))
			continue
		}
		// A full worker refuses before it opens the request (the nonce is
		// not spent): another may have room.
		if apierr.CodeOf(err) == apierr.Overloaded && attempt < 2 {
			continue
		}
		if err != nil {
			return nil, err
		}
		return &rep, nil
	}
}

// probeInterval is how often the gateway checks, during a synchronous
// call, that the worker running it is still on the bus.
const probeInterval = time.Second

// errWorkerLost ends a call whose worker left the bus.
var errWorkerLost = errors.New("worker lost")

// callWorker sends req to subject and waits for the reply. When subject is
// one worker's own, it checks every probeInterval that the worker is still
// subscribed (an empty request answered with "no responders" means it is
// not): a worker killed mid-call then ends the call with worker_lost
// within about a second instead of at the call's timeout.
func (g *Gateway) callWorker(ctx context.Context, subject string, req, rep any) error {
	if subject == bus.SubjectInvoke {
		return bus.Call(ctx, g.cfg.Conn, subject, req, rep)
	}
	cctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go func() {
		t := time.NewTicker(probeInterval)
		defer t.Stop()
		for {
			select {
			case <-cctx.Done():
				return
			case <-t.C:
			}
			pctx, stop := context.WithTimeout(cctx, probeInterval)
			_, err := g.cfg.Conn.RequestWithContext(pctx, subject, nil)
			stop()
			if errors.Is(err, nats.ErrNoResponders) {
				cancel(errWorkerLost)
				return
			}
		}
	}()
	err := bus.Call(cctx, g.cfg.Conn, subject, req, rep)
	if err != nil && errors.Is(context.Cause(cctx), errWorkerLost) {
		return apierr.New(apierr.WorkerLost, "worker %s stopped before it answered; the call may have run: retry only if running it twice is safe",
			strings.TrimPrefix(subject, bus.SubjectInvokeWorker))
	}
	return err
}
