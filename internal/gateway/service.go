package gateway

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/async"
	"github.com/cloister-faas/cloister/internal/bundle"
	"github.com/cloister-faas/cloister/internal/bus"
	"github.com/cloister-faas/cloister/internal/registry"
	"github.com/cloister-faas/cloister/internal/wire"
)

// The service layer: what the native /v1 API and the OpenWhisk API both
// call to find a function, to check that it may take plaintext, to bound a
// call, and to route it to a worker or queue it. It knows neither API's
// shapes; the handlers translate their requests into its calls and its
// answers into their responses. Its dependencies are interfaces, so that
// the handlers are tested with a fake registry, bus and queue
// (handlers_test.go).

// functionReader reads function records: *registry.Registry.
type functionReader interface {
	Get(ctx context.Context, ns, name string, version int) (*registry.Record, error)
	Latest(ctx context.Context, ns, name string) (int, error)
	NextVersion(ctx context.Context, ns, name string) (int, error)
	List(ctx context.Context, ns string) ([]*registry.Record, error)
	// ListPage is a page of List in name order, after the name after
	// (limit <= 0: all of them), and whether more follow.
	ListPage(ctx context.Context, ns, after string, limit int) ([]*registry.Record, bool, error)
}

// invoker runs invocations on workers: over NATS (busInvoker), or a fake.
type invoker interface {
	// invoke runs req on a worker that may run rec: one that is admitted
	// and satisfies its TEE policy, picked by the gateway.
	invoke(ctx context.Context, rec *registry.Record, req *wire.InvokeRequest) (*wire.InvokeReply, error)
	// invokeAny runs req on whichever worker takes it from the shared
	// subject: a sealed sequence, whose worker resolves and checks each step.
	invokeAny(ctx context.Context, req *wire.InvokeRequest) (*wire.InvokeReply, error)
}

// activationQueue queues invocations and keeps their activation records:
// *async.Store, or a fake.
type activationQueue interface {
	Submit(ctx context.Context, sub async.Submission) (wire.Accepted, error)
	Wait(ctx context.Context, ns, id string) (*wire.Activation, error)
	Get(ctx context.Context, ns, id string) (*wire.Activation, uint64, error)
	Update(ctx context.Context, ns, id string, fn func(*wire.Activation) error) (*wire.Activation, error)
	Record(ctx context.Context, a *wire.Activation) error
	List(ctx context.Context, ns string, o async.ListOptions) ([]*wire.Activation, error)
	// ListPage is List with the cursor of the next page ("" at the end).
	ListPage(ctx context.Context, ns string, o async.ListOptions) ([]*wire.Activation, string, error)
	DeadLetters(ctx context.Context, ns string, since time.Time, limit int) ([]wire.DeadLetter, error)
}

// service is the gateway's path from a request to a function.
type service struct {
	functions functionReader
	workers   invoker
	// queue is nil when async invocations are not enabled.
	queue activationQueue

	limitsMu sync.Mutex
	limits   map[string]time.Duration // a function's time limit, by bundle hash
}

func newService(functions functionReader, workers invoker, queue activationQueue) *service {
	return &service{functions: functions, workers: workers, queue: queue}
}

// lookup reads a function version (0: the latest), as not_found or
// unavailable when it cannot.
func (s *service) lookup(ctx context.Context, ns, name string, version int) (*registry.Record, error) {
	rec, err := s.functions.Get(ctx, ns, name, version)
	if errors.Is(err, registry.ErrNotFound) {
		return nil, apierr.New(apierr.NotFound, "function %q (version %s) not found in namespace %q", name, versionString(version), ns)
	}
	if err != nil {
		return nil, storeError("registry", err)
	}
	return rec, nil
}

// How a refused plaintext caller can call a confidential function instead,
// by the API or feature it used (requirePlain).
const (
	plainHintInvoke    = "use `cloister invoke` or the client SDK, which seal the request to the attested worker"
	plainHintAsync     = "use `cloister invoke --async` or the client SDK, which seal the request to the attested worker"
	plainHintTrigger   = "trigger events are plaintext, so a rule can only fire functions deployed with confidential: optional"
	plainHintOpenWhisk = "an OpenWhisk client sends plaintext that the gateway can read (gateway-trusted). " +
		"Invoke it with the confidential client instead: `cloister invoke NAME --data '{...}'`, or the Go SDK " +
		"(github.com/cloister-faas/cloister/client), which seal the request to the attested worker"
)

// requirePlain refuses, with confidential_required, a function that does
// not take plaintext: one whose manifest says confidential: required. The
// gateway checks it before plaintext goes further; hint says what to do.
func requirePlain(rec *registry.Record, hint string) error {
	if rec.Function.Confidential == bundle.ConfidentialOptional {
		return nil
	}
	return apierr.New(apierr.ConfidentialRequired, "function %q requires confidential requests (confidential: required); %s",
		rec.Function.Name, strings.ReplaceAll(hint, "NAME", rec.Function.Name))
}

// The margins callBudget adds to the functions' own time limits.
const (
	// replyMargin covers the bus and the worker's reply.
	replyMargin = 25 * time.Second
	// stepMargin covers, per function run, scheduling and a cold start.
	stepMargin = 5 * time.Second
)

// maxLimits bounds the cache of decoded time limits; when full it starts
// again empty.
const maxLimits = 4096

// timeLimit is a function version's own time limit (its manifest's
// limits.timeout_ms, defaults applied), decoded once per bundle.
func (s *service) timeLimit(rec *registry.Record) time.Duration {
	key := rec.Function.BundleHash
	s.limitsMu.Lock()
	d, ok := s.limits[key]
	s.limitsMu.Unlock()
	if ok && key != "" {
		return d
	}
	var m bundle.Manifest
	// The coordinator validated the manifest at deploy; one that does not
	// decode here leaves the default limit.
	_ = json.Unmarshal(rec.Manifest, &m)
	m.ApplyDefaults()
	d = time.Duration(m.Limits.TimeoutMS) * time.Millisecond
	s.limitsMu.Lock()
	if s.limits == nil || len(s.limits) >= maxLimits {
		s.limits = make(map[string]time.Duration)
	}
	s.limits[key] = d
	s.limitsMu.Unlock()
	return d
}

// callBudget is how long the gateway waits for the given function versions
// to run one after another (one for a call, each step of a sequence): each
// one's time limit plus stepMargin, plus replyMargin.
func (s *service) callBudget(recs ...*registry.Record) time.Duration {
	d := replyMargin
	for _, rec := range recs {
		d += s.timeLimit(rec) + stepMargin
	}
	return d
}

// route runs req, an invocation of rec, on a worker and waits for its
// reply within callBudget.
func (s *service) route(ctx context.Context, rec *registry.Record, req *wire.InvokeRequest) (*wire.InvokeReply, error) {
	ctx, cancel := context.WithTimeout(ctx, s.callBudget(rec))
	defer cancel()
	return s.workers.invoke(ctx, rec, req)
}

// routeSequence runs a sealed sequence of the given steps and waits for
// its reply within their callBudget.
func (s *service) routeSequence(ctx context.Context, steps []*registry.Record, req *wire.InvokeRequest) (*wire.InvokeReply, error) {
	ctx, cancel := context.WithTimeout(ctx, s.callBudget(steps...))
	defer cancel()
	return s.workers.invokeAny(ctx, req)
}

// asyncQueue is the activation queue, or unavailable when async
// invocations are not enabled on this gateway.
func (s *service) asyncQueue() (activationQueue, error) {
	if s.queue == nil {
		return nil, apierr.New(apierr.Unavailable, "async invocations are not enabled on this gateway")
	}
	return s.queue, nil
}

// submit queues req (a function or sealed sequence invocation) under the
// caller's idempotency key.
func (s *service) submit(ctx context.Context, kind string, req wire.InvokeRequest, idempotencyKey string) (wire.Accepted, error) {
	q, err := s.asyncQueue()
	if err != nil {
		return wire.Accepted{}, err
	}
	return q.Submit(ctx, async.Submission{Request: req, Kind: kind, IdempotencyKey: idempotencyKey})
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

// busInvoker is the invoker over NATS: it picks a worker (schedule.go) and
// calls it.
type busInvoker struct{ g *Gateway }

func (b busInvoker) invoke(ctx context.Context, rec *registry.Record, req *wire.InvokeRequest) (*wire.InvokeReply, error) {
	for attempt := 0; ; attempt++ {
		subject, err := b.g.pick(ctx, rec)
		if err != nil {
			return nil, err
		}
		rep, err := b.g.callWorker(ctx, subject, req)
		// A worker that stopped since its last advertisement (gone, or
		// stopping): forget it and pick again. Nothing ran, so nothing is
		// repeated.
		if code := apierr.CodeOf(err); (code == apierr.NoWorker || code == apierr.Unavailable) && subject != bus.SubjectInvoke && attempt < 2 {
			b.g.pool.forget(strings.TrimPrefix(subject, bus.SubjectInvokeWorker))
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
		return rep, nil
	}
}

func (b busInvoker) invokeAny(ctx context.Context, req *wire.InvokeRequest) (*wire.InvokeReply, error) {
	return b.g.callWorker(ctx, bus.SubjectInvoke, req)
}

// probeInterval is how often the gateway checks, during a synchronous
// call, that the worker running it is still on the bus and still running
// it.
const probeInterval = time.Second

// errWorkerLost ends a call whose worker left the bus; errAnswerLost one
// whose worker is there but not running it, and whose answer has not come.
var (
	errWorkerLost = errors.New("worker lost")
	errAnswerLost = errors.New("answer lost")
)

// callWorker sends req to subject in the binary envelope
// (wire.InvokeRequest.AppendBinary) and waits for the reply. When subject
// is one worker's own, the call is named (bus.HeaderCall) and the gateway
// asks the worker every probeInterval whether it is still running it
// (bus.ProbeCall). A worker killed mid-call ("no responders") ends the
// call with worker_lost within about a second instead of at the call's
// timeout; so does a worker that is not running the call and whose answer
// has still not come a probeInterval later: the request or the answer was
// lost on the bus (a NATS node died with it), and the call would
// otherwise wait for its caller's deadline.
func (g *Gateway) callWorker(ctx context.Context, subject string, req *wire.InvokeRequest) (*wire.InvokeReply, error) {
	b, err := req.AppendBinary(make([]byte, 0, 256+len(req.Plain)+len(req.Sealed.Ciphertext)+len(req.Sealed.Enc)+len(req.Sealed.Ticket)))
	if err != nil {
		return nil, fmt.Errorf("encoding invoke request: %w", err)
	}
	decode := func(out []byte, err error) (*wire.InvokeReply, error) {
		if err != nil {
			return nil, err
		}
		var rep wire.InvokeReply
		if err := rep.UnmarshalBinary(out); err != nil {
			return nil, apierr.New(apierr.Internal, "malformed reply on %s: %v", subject, err)
		}
		return &rep, nil
	}
	if subject == bus.SubjectInvoke {
		return decode(bus.CallBytes(ctx, g.cfg.Conn, subject, b))
	}
	id := rand.Text()
	cctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go func() {
		t := time.NewTicker(probeInterval)
		defer t.Stop()
		idle := false
		for {
			select {
			case <-cctx.Done():
				return
			case <-t.C:
			}
			if idle {
				// The worker said a probeInterval ago that it is not
				// running the call; an answer it sent before that would
				// have come first.
				cancel(errAnswerLost)
				return
			}
			pctx, stop := context.WithTimeout(cctx, probeInterval)
			err := bus.ProbeCall(pctx, g.cfg.Conn, subject, id)
			stop()
			switch {
			case errors.Is(err, nats.ErrNoResponders):
				cancel(errWorkerLost)
				return
			case errors.Is(err, bus.ErrCallIdle):
				idle = true
			}
		}
	}()
	rep, err := decode(bus.CallBytesNamed(cctx, g.cfg.Conn, subject, id, b))
	if err != nil {
		worker := strings.TrimPrefix(subject, bus.SubjectInvokeWorker)
		switch context.Cause(cctx) {
		case errWorkerLost:
			return nil, apierr.New(apierr.WorkerLost, "worker %s stopped before it answered; the call may have run: retry only if running it twice is safe", worker)
		case errAnswerLost:
			return nil, apierr.New(apierr.WorkerLost, "worker %s is not running the call and its answer did not come: the request or the answer was lost on the bus (a NATS node failed?); the call may have run: retry only if running it twice is safe", worker)
		}
	}
	return rep, err
}
