package trigger

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cloister-faas/cloister/internal/async"
	"github.com/cloister-faas/cloister/internal/bus"
	"github.com/cloister-faas/cloister/internal/wire"
)

// RunnerConfig configures a Runner.
type RunnerConfig struct {
	Conn   *nats.Conn
	Async  *bus.AsyncStores
	Logger *slog.Logger
	Now    func() time.Time
}

// Runner watches the triggers bucket and keeps one cron loop or subject
// subscription per trigger. Several runners may run (one per gateway):
// cron fires are idempotent per scheduled time, and subject subscriptions
// share a queue group, so each event fires once.
type Runner struct {
	cfg   RunnerConfig
	log   *slog.Logger
	store *Store
	queue *async.Store

	mu      sync.Mutex
	running map[string]runningTrigger // by trigger key
}

// runningTrigger is the revision of a trigger record the runner applied,
// and how to stop what it started.
type runningTrigger struct {
	rev  uint64
	stop func()
}

// NewRunner returns a runner.
func NewRunner(cfg RunnerConfig) *Runner {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Runner{cfg: cfg, log: cfg.Logger.WithGroup("triggers"), store: NewStore(cfg.Async.JS, cfg.Async.Triggers),
		queue: async.NewStore(cfg.Async, cfg.Now), running: map[string]runningTrigger{}}
}

// Run serves until ctx ends. The watch of the triggers bucket is started
// again whenever it fails (a NATS node restarting, a stream electing a
// leader): the triggers already running keep running meanwhile.
func (r *Runner) Run(ctx context.Context) error {
	defer func() {
		r.mu.Lock()
		for k, rt := range r.running {
			rt.stop()
			delete(r.running, k)
		}
		r.mu.Unlock()
	}()
	bus.Supervise(ctx, r.log, "the triggers' watch", r.follow)
	return nil
}

// follow watches the triggers bucket until ctx ends or the watch fails.
// A watch delivers every trigger first: those running from an earlier
// watch whose record is unchanged go on as they are, and those whose
// record went away meanwhile stop.
func (r *Runner) follow(ctx context.Context) error {
	w, err := r.cfg.Async.Triggers.WatchFiltered(ctx, []string{"t.>"})
	if err != nil {
		return fmt.Errorf("watching triggers: %w", err)
	}
	defer w.Stop()            // fails only once the subscription or its connection is closed
	seen := map[string]bool{} // during the initial values; nil after
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("the watch of the triggers ended")
			}
			if e == nil { // the initial values are all delivered
				if seen != nil {
					r.keepOnly(seen)
					seen = nil
				}
				continue
			}
			if seen != nil {
				seen[e.Key()] = true
			}
			r.apply(ctx, e)
		}
	}
}

// keepOnly stops the running triggers whose keys are not in keys.
func (r *Runner) keepOnly(keys map[string]bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for k, rt := range r.running {
		if !keys[k] {
			rt.stop()
			delete(r.running, k)
		}
	}
}

// apply starts, changes or stops the trigger of a bucket entry. An entry
// whose revision already runs changes nothing.
func (r *Runner) apply(ctx context.Context, e jetstream.KeyValueEntry) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if rt, ok := r.running[e.Key()]; ok {
		if rt.rev == e.Revision() {
			return
		}
		rt.stop()
		delete(r.running, e.Key())
	}
	if e.Operation() != jetstream.KeyValuePut {
		return
	}
	// From here the revision is applied, even if it starts nothing: a
	// watch started again does not warn about it twice.
	r.running[e.Key()] = runningTrigger{rev: e.Revision(), stop: func() {}}
	var t wire.Trigger
	if err := json.Unmarshal(e.Value(), &t); err != nil || e.Key() != TriggerKey(t.Namespace, t.Name) {
		r.log.Warn("ignoring a malformed trigger record", "key", e.Key())
		return
	}
	if err := Validate(&t); err != nil {
		// A record from before a stricter rule (a subject outside the
		// namespace's event space, say): it stays stored, shown as
		// disabled, and fires nothing until its owner re-creates it.
		r.log.Warn("trigger disabled", "namespace", t.Namespace, "trigger", t.Name, "subject", t.Subject, "reason", err.Error())
		return
	}
	tctx, cancel := context.WithCancel(ctx)
	switch {
	case t.Cron != "":
		sched, _ := ParseCron(t.Cron) // Validate parsed it above
		done := make(chan struct{})
		go func() { defer close(done); r.cron(tctx, &t, sched) }()
		r.running[e.Key()] = runningTrigger{rev: e.Revision(), stop: func() { cancel(); <-done }}
	case t.Subject != "":
		space := EventSpace(t.Namespace)
		sub, err := r.cfg.Conn.QueueSubscribe(t.Subject, bus.TriggerQueue, func(m *nats.Msg) {
			if !strings.HasPrefix(m.Subject, space) {
				// Cannot happen with a validated subject; checked anyway,
				// since this is the line between tenants.
				r.log.Error("dropping an event outside the trigger's namespace", "namespace", t.Namespace, "trigger", t.Name, "subject", m.Subject)
				return
			}
			key := ""
			if id := m.Header.Get(nats.MsgIdHdr); id != "" {
				key = "msg/" + id
			}
			r.fire(tctx, &t, m.Data, key)
		})
		if err != nil {
			cancel()
			delete(r.running, e.Key()) // the next watch tries again
			r.log.Warn("subscribing a trigger", "trigger", t.Name, "subject", t.Subject, "err", err)
			return
		}
		// Unsubscribe fails only on a closed connection, which dropped it.
		r.running[e.Key()] = runningTrigger{rev: e.Revision(), stop: func() { cancel(); _ = sub.Unsubscribe() }}
	default:
		cancel() // fired over the API only
	}
}

func (r *Runner) cron(ctx context.Context, t *wire.Trigger, s *Schedule) {
	for {
		next := s.Next(r.cfg.Now())
		if next.IsZero() {
			r.log.Warn("cron schedule never fires", "trigger", t.Name, "cron", t.Cron)
			return
		}
		timer := time.NewTimer(next.Sub(r.cfg.Now()))
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-timer.C:
		}
		r.fire(ctx, t, CronPayload(t, next), "cron/"+strconv.FormatInt(next.Unix(), 10))
	}
}

func (r *Runner) fire(ctx context.Context, t *wire.Trigger, payload []byte, key string) {
	f, err := Fire(ctx, r.store, r.queue, t, payload, key)
	if err != nil {
		r.log.Warn("firing trigger", "namespace", t.Namespace, "trigger", t.Name, "err", err)
	}
	if len(f.Activations) > 0 {
		r.log.Debug("trigger fired", "namespace", t.Namespace, "trigger", t.Name, "activations", strings.Join(f.Activations, ","))
	}
}
