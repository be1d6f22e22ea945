package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/async"
	"github.com/cloister-faas/cloister/internal/bus"
	"github.com/cloister-faas/cloister/internal/seal"
	"github.com/cloister-faas/cloister/internal/wire"
)

// AsyncConfig enables the async work queue on a worker.
type AsyncConfig struct {
	Stores *bus.AsyncStores
	// AckWait is how long a job may go without a heartbeat before
	// JetStream delivers it to another worker (default 30 s). A worker
	// running a job sends a heartbeat every AckWait/3, so this bounds how
	// long a crashed worker delays a job, not how long a function may run.
	AckWait time.Duration
	// Attempts is how many times a job is tried (default 5: with the backoff, over a minute of platform failures). A job whose
	// attempts all failed for platform reasons, or whose worker died on
	// the last one, goes to the dead-letter subject.
	Attempts int
	// Backoff is the delay before retry n (the last value repeats;
	// default 2 s, 15 s, 30 s: the third attempt comes 17 s after the
	// first, past a coordinator failover).
	Backoff []time.Duration
	// Started, if set, is called when an attempt starts, before the
	// function runs (observability and tests).
	Started func(activation string, attempt int)
	// Concurrency bounds the jobs this worker runs at once (default: the
	// worker's Concurrency).
	Concurrency int
	// NamespaceConcurrency bounds the jobs of one namespace this worker
	// runs at once (default: the namespace share of the worker's slots,
	// SlotLimits.NamespaceSlots). A job past it stays in the queue, where
	// waiting costs no attempt, instead of waiting for a slot here, and
	// the rest of Concurrency stays free for other namespaces.
	NamespaceConcurrency int
	// Poll is how often a worker reads which namespaces have jobs
	// (default 250 ms). Gateways announce new jobs, so it bounds how late
	// a worker sees what no announcement told it: a retry whose delay
	// ended, a job back from a dead worker, a lost announcement.
	Poll time.Duration
}

func (c *AsyncConfig) defaults() {
	if c.AckWait <= 0 {
		c.AckWait = 30 * time.Second
	}
	if c.Attempts <= 0 {
		c.Attempts = 5
	}
	if len(c.Backoff) == 0 {
		c.Backoff = []time.Duration{2 * time.Second, 15 * time.Second, 30 * time.Second}
	}
	if c.Poll <= 0 {
		c.Poll = 250 * time.Millisecond
	}
}

// runAsync takes jobs from the queue while ctx lasts, at most
// AsyncConfig.Concurrency at once, taking the namespaces with jobs in
// turn (see dispatcher), and waits for the jobs it started.
func (w *Worker) runAsync(ctx context.Context) error {
	a := w.cfg.Async
	a.defaults()
	n := a.Concurrency
	if n <= 0 {
		n = w.cfg.Concurrency
	}
	perNS := a.NamespaceConcurrency
	if perNS <= 0 {
		perNS = w.cfg.Slots.NamespaceSlots
	}
	if perNS <= 0 || perNS > n {
		perNS = n
	}
	d := newDispatcher(a, perNS, w.log)
	d.saturated = w.slots.saturated
	if err := d.dropLegacyConsumer(ctx); err != nil {
		return err
	}
	// Gateways announce each queued job; a lost announcement costs at
	// most one poll.
	wake := make(chan string, 256)
	sub, err := a.Stores.JS.Conn().Subscribe(bus.SubjectAsyncQueued, func(m *nats.Msg) {
		select {
		case wake <- string(m.Data):
		default:
		}
	})
	if err != nil {
		return fmt.Errorf("subscribing to queued-job announcements: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }() // fails only on a closed connection, which drops it anyway
	store := async.NewStore(a.Stores, w.now)
	sem := make(chan struct{}, n)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return nil
		}
		m, subject := d.take(ctx, wake)
		if m == nil {
			return nil // ctx ended
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			defer d.done(subject)
			w.handleJob(ctx, store, m)
		}()
	}
}

// dispatcher hands out jobs one at a time, taking the namespaces that
// have jobs in turn, so that one namespace's backlog never stands in
// front of another's next job (docs/adr/0001-async-fairness.md).
//
// Each namespace's jobs are on their own subject, and each subject has
// its own durable consumer, shared by every worker. The dispatcher keeps
// a ring of the subjects that hold messages (read from the stream's
// per-subject counts every Poll, and extended at once by the gateways'
// announcements), and asks each in turn for one message, without
// waiting. It skips a namespace that already has perNS jobs running here.
// take is called by one goroutine; done by any.
type dispatcher struct {
	a     *AsyncConfig
	perNS int
	log   *slog.Logger
	cons  map[string]jetstream.Consumer // by subject
	ring  []string                      // subjects with messages, in turn order
	next  int                           // index in ring of the next subject to ask
	read  time.Time                     // when ring was last read from the stream
	freed chan struct{}                 // a job ended (capacity 1)

	// saturated reports that a namespace has no room in the worker's
	// slots (nil: never): its jobs stay in the stream, where waiting
	// costs no attempt, rather than be refused overloaded once taken.
	saturated func(ns string) bool

	mu      sync.Mutex
	running map[string]int // subject → jobs taken and not done
}

func newDispatcher(a *AsyncConfig, perNS int, log *slog.Logger) *dispatcher {
	return &dispatcher{a: a, perNS: perNS, log: log, cons: map[string]jetstream.Consumer{},
		freed: make(chan struct{}, 1), running: map[string]int{}}
}

// done records that a job taken from subject has ended.
func (d *dispatcher) done(subject string) {
	d.mu.Lock()
	if d.running[subject]--; d.running[subject] <= 0 {
		delete(d.running, subject)
	}
	d.mu.Unlock()
	select {
	case d.freed <- struct{}{}:
	default:
	}
}

// full reports whether subject has its share of jobs running here.
func (d *dispatcher) full(subject string) bool {
	if d.saturated != nil && d.saturated(strings.TrimPrefix(subject, bus.SubjectAsyncPrefix)) {
		return true
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.running[subject] >= d.perNS
}

// dropLegacyConsumer deletes the single consumer of earlier versions. Its
// filter overlaps every namespace's, and a work queue refuses overlapping
// consumers. The jobs it had delivered and not acknowledged stay in the
// stream and are delivered again through the namespaces' consumers.
func (d *dispatcher) dropLegacyConsumer(ctx context.Context) error {
	err := d.a.Stores.JS.DeleteConsumer(ctx, bus.StreamAsync, bus.ConsumerAsync)
	switch {
	case err == nil:
		d.log.Info("deleted the async consumer of an earlier version; the jobs it held are delivered again", "consumer", bus.ConsumerAsync)
	case errors.Is(err, jetstream.ErrConsumerNotFound):
	default:
		return fmt.Errorf("deleting the earlier async consumer: %w", err)
	}
	return nil
}

// take returns the next job and its subject, or nil once ctx ends.
func (d *dispatcher) take(ctx context.Context, wake <-chan string) (jetstream.Msg, string) {
	for {
		for more := true; more; {
			select {
			case ns := <-wake:
				d.add(bus.SubjectAsyncPrefix + ns)
			default:
				more = false
			}
		}
		if time.Since(d.read) >= d.a.Poll {
			d.refresh(ctx)
		}
		if m, subject := d.round(ctx); m != nil {
			d.mu.Lock()
			d.running[subject]++
			d.mu.Unlock()
			return m, subject
		}
		// Nothing to take now: wait for an announcement, a job to end (its
		// namespace may be under its share again) or the next poll (a
		// retry's delay ends, a job comes back after a worker died).
		t := time.NewTimer(d.a.Poll)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ""
		case ns := <-wake:
			d.add(bus.SubjectAsyncPrefix + ns)
		case <-d.freed:
		case <-t.C:
		}
		t.Stop()
	}
}

// add puts subject in the ring, last in turn, unless it is there.
func (d *dispatcher) add(subject string) {
	if !strings.HasPrefix(subject, bus.SubjectAsyncPrefix) || slices.Contains(d.ring, subject) {
		return
	}
	d.ring = append(d.ring, subject)
}

// refresh reads which subjects hold messages. Subjects already in the
// ring keep their turn; new ones join at the end.
func (d *dispatcher) refresh(ctx context.Context) {
	info, err := d.a.Stores.Queue.Info(ctx, jetstream.WithSubjectFilter(bus.SubjectAsyncPrefix+">"))
	if err != nil {
		if ctx.Err() == nil {
			d.log.Warn("reading the async queue", "err", err)
		}
		d.read = time.Now() // try again at the next poll
		return
	}
	d.read = time.Now()
	var kept []string
	keptNext := 0
	for i, s := range d.ring {
		if info.State.Subjects[s] > 0 {
			if i < d.next {
				keptNext++
			}
			kept = append(kept, s)
		}
	}
	var added []string
	for s, n := range info.State.Subjects {
		if n > 0 && !slices.Contains(kept, s) {
			added = append(added, s)
		}
	}
	slices.Sort(added)
	d.ring, d.next = append(kept, added...), keptNext
	for s := range d.cons {
		if info.State.Subjects[s] == 0 {
			delete(d.cons, s) // the server deletes it once idle (InactiveThreshold)
		}
	}
}

// round asks each subject in the ring once, in turn from next, for one
// message, and returns the first it gets (nil if none had one ready).
// Subjects with their share running here are passed over.
func (d *dispatcher) round(ctx context.Context) (jetstream.Msg, string) {
	for range len(d.ring) {
		if ctx.Err() != nil {
			return nil, ""
		}
		if d.next >= len(d.ring) {
			d.next = 0
		}
		subject := d.ring[d.next]
		d.next++
		if d.full(subject) {
			continue
		}
		if m := d.fetch(ctx, subject); m != nil {
			return m, subject
		}
	}
	return nil, ""
}

// fetch takes one message of subject if one is ready.
func (d *dispatcher) fetch(ctx context.Context, subject string) jetstream.Msg {
	cons, err := d.consumer(ctx, subject)
	if err != nil {
		if ctx.Err() == nil {
			d.log.Warn("opening an async consumer", "subject", subject, "err", err)
		}
		return nil
	}
	batch, err := cons.FetchNoWait(1)
	if err != nil {
		delete(d.cons, subject) // deleted meanwhile, or unreachable: open it again next time
		if ctx.Err() == nil {
			d.log.Warn("fetching async jobs", "subject", subject, "err", err)
		}
		return nil
	}
	var got jetstream.Msg
	for m := range batch.Messages() {
		got = m
	}
	if err := batch.Error(); err != nil && got == nil {
		delete(d.cons, subject)
		if ctx.Err() == nil && !errors.Is(err, jetstream.ErrNoMessages) {
			d.log.Warn("fetching async jobs", "subject", subject, "err", err)
		}
	}
	return got
}

// consumer returns subject's durable consumer, creating it (or updating
// its settings) on first use. Every worker shares it.
func (d *dispatcher) consumer(ctx context.Context, subject string) (jetstream.Consumer, error) {
	if c, ok := d.cons[subject]; ok {
		return c, nil
	}
	cfg := jetstream.ConsumerConfig{
		Durable: bus.AsyncConsumerName(subject), FilterSubject: subject,
		AckPolicy: jetstream.AckExplicitPolicy, AckWait: d.a.AckWait,
		// Attempts are counted in the activation record, not in
		// deliveries: a delivery that found the function or the worker
		// busy costs no attempt (handleJob), so JetStream must not stop
		// delivering. maxDeliveries bounds a job that is always busy.
		MaxDeliver: maxDeliveries(d.a.Attempts), MaxAckPending: -1,
		// A namespace with nothing queued does not keep a consumer. The
		// server counts from the last pull or, with jobs out, from their
		// ack deadline, so a running job keeps its consumer.
		InactiveThreshold: asyncConsumerIdle,
	}
	c, err := d.a.Stores.JS.CreateOrUpdateConsumer(ctx, bus.StreamAsync, cfg)
	var ae *jetstream.APIError
	if errors.As(err, &ae) && ae.ErrorCode == jsErrCodeConsumerNotUnique {
		// A worker of an earlier version put the single consumer back.
		if err := d.dropLegacyConsumer(ctx); err != nil {
			return nil, err
		}
		c, err = d.a.Stores.JS.CreateOrUpdateConsumer(ctx, bus.StreamAsync, cfg)
	}
	if err != nil {
		return nil, err
	}
	d.cons[subject] = c
	return c, nil
}

// asyncConsumerIdle is how long a namespace's consumer outlives its last
// job.
const asyncConsumerIdle = 10 * time.Minute

// jsErrCodeConsumerNotUnique is JetStream's "filtered consumer not
// unique on workqueue stream": another consumer's filter overlaps.
const jsErrCodeConsumerNotUnique jetstream.ErrorCode = 10100

// recordVisible is how long after its job was queued an activation record
// that cannot be read is taken for a replica that lags, not for a record
// that does not exist. Its waits cost deliveries (20 at most), not
// attempts; maxBusy leaves room for them.
const recordVisible = 10 * time.Second

// busy codes say the function or the worker had no room: nothing ran, so
// the delivery is put back without costing an attempt.
func busy(c apierr.Code) bool { return c == apierr.ConcurrencyLimit || c == apierr.Overloaded }

// maxDeliveries bounds the deliveries of a job: its attempts, one more
// for a job whose worker died on its last attempt, and maxBusy busy ones.
func maxDeliveries(attempts int) int { return attempts + 1 + maxBusy }

// maxBusy is how many times a job may find no room before it is dead-
// lettered; busyDelay(n) apart, that is over half an hour.
const maxBusy = 200

// busyDelay is the wait before the delivery after the n-th busy one.
func busyDelay(n int) time.Duration {
	return min(time.Duration(n)*500*time.Millisecond, 10*time.Second)
}

// retryable codes are platform failures: the function did not run to a
// result, and another attempt (here or on another worker) may succeed.
func retryable(c apierr.Code) bool {
	switch c {
	case apierr.Unavailable, apierr.Interrupted, apierr.NoWorker, apierr.Internal, apierr.ConcurrencyLimit, apierr.Overloaded, apierr.TEEPolicy, apierr.Timeout:
		return true
	}
	return false
}

// handleJob runs one delivery of a job.
func (w *Worker) handleJob(ctx context.Context, store *async.Store, m jetstream.Msg) {
	a := w.cfg.Async
	meta, err := m.Metadata()
	if err != nil {
		w.log.Warn("async message without metadata", "err", err)
		return
	}
	// The attempt is the record's (deliveries that found no room are not
	// attempts); it is known once the record is updated below.
	delivery := int(meta.NumDelivered)
	attempt := delivery
	// Heartbeats keep the job ours for as long as this worker handles it.
	hbDone := make(chan struct{})
	defer close(hbDone)
	go func() {
		t := time.NewTicker(a.AckWait / 3)
		defer t.Stop()
		for {
			select {
			case <-hbDone:
				return
			case <-t.C:
				_ = m.InProgress() // a lost heartbeat: the next tick, a third of AckWait later, sends another
			}
		}
	}()
	var job wire.AsyncJob
	if err := json.Unmarshal(m.Data(), &job); err != nil || !async.ValidID(job.Activation) || job.Request.Activation != job.Activation {
		w.deadLetter(ctx, store, m, wire.DeadLetter{Code: apierr.BadRequest, Reason: "malformed job: not an async invocation message", Attempts: attempt})
		return
	}
	req := &job.Request
	ns, id := req.Namespace, job.Activation
	log := w.log.With("activation", id, "namespace", ns, "function", req.Name)
	dl := wire.DeadLetter{Activation: id, Namespace: ns, Name: req.Name, Attempts: attempt}
	exhausted := false
	_, err = store.Update(ctx, ns, id, func(r *wire.Activation) error {
		attempt = r.Attempts + 1
		if attempt > a.Attempts || delivery >= maxDeliveries(a.Attempts) {
			exhausted = true
			return nil
		}
		r.Status, r.Attempts, r.Worker = wire.StatusRunning, attempt, w.cfg.ID
		if r.Start == 0 {
			r.Start = async.Millis(w.now())
		}
		r.Logs = append(r.Logs, async.LogLine(w.now(), "attempt %d on worker %s", attempt, w.cfg.ID))
		return nil
	})
	log = log.With("attempt", attempt)
	dl.Attempts = min(attempt, a.Attempts)
	if err == nil && exhausted {
		dl.Code, dl.Reason = apierr.Unavailable, fmt.Sprintf("no attempt completed after %d attempts (the worker running the last one stopped) and %d deliveries", a.Attempts, delivery-1)
		w.finishFailed(ctx, store, m, dl, log)
		return
	}
	switch {
	case errors.Is(err, async.ErrFinal):
		// Completed before (another worker, or this one before a lost ack).
		_ = m.DoubleAck(ctx) // if lost, JetStream redelivers, and the final record acks it again
		return
	case apierr.CodeOf(err) == apierr.NotFound && time.Since(meta.Timestamp) < recordVisible:
		// The gateway wrote the record before it queued the job, but a
		// key-value read may be served by a replica that has not caught
		// up yet: ask again shortly (a delivery, not an attempt).
		log.Info("the activation record is not visible yet; the job waits", "queued", meta.Timestamp)
		_ = m.NakWithDelay(recordVisible / 20) // if lost, JetStream redelivers after AckWait
		return
	case apierr.CodeOf(err) == apierr.NotFound:
		dl.Code, dl.Reason = apierr.NotFound, "the activation record does not exist"
		w.deadLetter(ctx, store, m, dl)
		return
	case err != nil:
		log.Warn("updating activation record; will retry", "err", err)
		_ = m.NakWithDelay(a.backoff(attempt)) // if lost, JetStream redelivers after AckWait
		return
	}
	if a.Started != nil {
		a.Started(id, attempt)
	}
	if ctx.Err() != nil {
		return // stopping: JetStream delivers the job again
	}
	rep, runErr := w.invoke(ctx, req)
	if ctx.Err() != nil {
		_ = m.Nak() // if lost, JetStream redelivers after AckWait
		return
	}
	if runErr != nil {
		ae := apierr.From(runErr)
		dl.Code, dl.Reason = ae.Code, ae.Message
		if busy(ae.Code) && delivery < maxDeliveries(a.Attempts)-1 {
			// Nothing ran: give the attempt back and wait for room.
			d := busyDelay(delivery - attempt + 1)
			w.requeue(ctx, store, m, ns, id, attempt-1, d, async.LogLine(w.now(), "no room (%s); waiting %s, no attempt spent", ae.Code, d))
			return
		}
		if retryable(ae.Code) && attempt < a.Attempts {
			d := a.backoff(attempt)
			w.requeue(ctx, store, m, ns, id, attempt, d, async.LogLine(w.now(), "attempt %d failed: %s; retrying in %s", attempt, ae.Code, d))
			return
		}
		if retryable(ae.Code) {
			dl.Reason = fmt.Sprintf("all %d attempts failed; last: %s", a.Attempts, ae.Message)
		}
		w.finishFailed(ctx, store, m, dl, log)
		return
	}
	now := w.now()
	err = w.recordResult(ctx, store, ns, id, func(r *wire.Activation) error {
		r.Version = rep.Version
		r.End = async.Millis(now)
		r.Duration = r.End - r.Start
		r.Response = async.Outcome(req, rep)
		r.Status = r.Response.Status
		r.Receipt, r.Receipts = rep.Receipt, rep.Receipts
		if req.Mode == wire.ModePlain {
			if len(rep.Logs) > 0 {
				r.Logs = append(r.Logs, async.LogLines(rep.Logs)...)
			}
		} else {
			r.SealedLogs = rep.Logs
		}
		r.Logs = append(r.Logs, async.LogLine(now, "finished: %s", r.Status))
		return nil
	})
	switch {
	case err == nil:
		_ = m.DoubleAck(ctx) // if lost, JetStream redelivers, and the final record acks it again
	case errors.Is(err, async.ErrFinal):
		log.Info("activation was completed by another attempt; this result is discarded")
		_ = m.DoubleAck(ctx) // if lost, JetStream redelivers, and the final record acks it again
	default:
		log.Warn("recording the activation result failed; will retry", "err", err)
		_ = m.NakWithDelay(a.backoff(attempt)) // if lost, JetStream redelivers after AckWait
	}
}

// resultRetryFor is how long a worker keeps trying to record the result
// of a job that ran, and resultRetryStopping how long once the worker is
// stopping: the job ran, so handing it back to the queue would run it
// again. The job's heartbeats keep it this worker's meanwhile. A JetStream
// election (4–9 s after a leader dies) is the usual reason.
const (
	resultRetryFor      = 2 * time.Minute
	resultRetryStopping = 15 * time.Second
)

// recordResult updates a finished job's record with fn (its result, or
// its failure), trying again while the store is unavailable, for up to
// resultRetryFor.
func (w *Worker) recordResult(ctx context.Context, store *async.Store, ns, id string, fn func(*wire.Activation) error) error {
	start := time.Now()
	for wait := 100 * time.Millisecond; ; wait = min(2*wait, 2*time.Second) {
		tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		_, err := store.Update(tctx, ns, id, fn)
		cancel()
		if err == nil || apierr.CodeOf(err) != apierr.Unavailable {
			return err
		}
		limit := resultRetryFor
		if ctx.Err() != nil {
			limit = resultRetryStopping
		}
		if time.Since(start)+wait > limit {
			return err
		}
		time.Sleep(wait)
	}
}

// requeue puts a job back in the queue for another delivery after d, its
// record queued with attempts spent and the log line added. A record that
// another attempt completed meanwhile ends the job instead.
func (w *Worker) requeue(ctx context.Context, store *async.Store, m jetstream.Msg, ns, id string, attempts int, d time.Duration, line string) {
	_, err := store.Update(ctx, ns, id, func(r *wire.Activation) error {
		r.Status, r.Attempts = wire.StatusQueued, attempts
		r.Logs = append(r.Logs, line)
		return nil
	})
	if errors.Is(err, async.ErrFinal) {
		_ = m.DoubleAck(ctx) // if lost, JetStream redelivers, and the final record acks it again
		return
	}
	_ = m.NakWithDelay(d) // if lost, JetStream redelivers after AckWait
}

func (a *AsyncConfig) backoff(attempt int) time.Duration {
	return a.Backoff[min(max(attempt-1, 0), len(a.Backoff)-1)]
}

// finishFailed marks the activation failed (platform_error), publishes a
// dead letter, and removes the job from the queue.
func (w *Worker) finishFailed(ctx context.Context, store *async.Store, m jetstream.Msg, dl wire.DeadLetter, log interface{ Warn(string, ...any) }) {
	now := w.now()
	err := w.recordResult(ctx, store, dl.Namespace, dl.Activation, func(r *wire.Activation) error {
		r.Status = wire.StatusPlatformError
		r.End = async.Millis(now)
		if r.Start != 0 {
			r.Duration = r.End - r.Start
		}
		r.Response = wire.ActivationResponse{Status: wire.StatusPlatformError, Error: &apierr.Error{Code: dl.Code, Message: dl.Reason}}
		r.Logs = append(r.Logs, async.LogLine(now, "dead-lettered: %s: %s", dl.Code, dl.Reason))
		return nil
	})
	if errors.Is(err, async.ErrFinal) {
		_ = m.DoubleAck(ctx) // if lost, JetStream redelivers, and the final record acks it again
		return
	}
	if err != nil && apierr.CodeOf(err) != apierr.NotFound {
		log.Warn("recording the failure; will retry", "err", err)
		_ = m.NakWithDelay(w.cfg.Async.backoff(dl.Attempts)) // if lost, JetStream redelivers after AckWait
		return
	}
	w.deadLetter(ctx, store, m, dl)
}

// deadLetter publishes dl with the original message and terminates the
// message, so it is never delivered again.
func (w *Worker) deadLetter(ctx context.Context, store *async.Store, m jetstream.Msg, dl wire.DeadLetter) {
	dl.Worker = w.cfg.ID
	if json.Valid(m.Data()) {
		dl.Job = m.Data()
	} else {
		dl.JobBase64 = m.Data()
	}
	if err := store.DeadLetter(ctx, dl); err != nil {
		w.log.Warn("dead-lettering failed; the job will be delivered again", "activation", dl.Activation, "err", err)
		_ = m.NakWithDelay(time.Second) // if lost, JetStream redelivers after AckWait
		return
	}
	w.log.Warn("job dead-lettered", "activation", dl.Activation, "code", dl.Code, "reason", dl.Reason)
	_ = m.TermWithReason(string(dl.Code)) // if lost, the redelivery finds the record final, or dead-letters again
}

// checkAsyncNonce refuses a replayed or stale async request. The nonce is
// remembered for bus.AsyncNonceWindow with the activation it arrived for:
// the same activation delivered again (a retry, or a redelivery after a
// worker died) passes, without a second freshness check; any other
// activation carrying the same sealed request is a replay.
func (w *Worker) checkAsyncNonce(ctx context.Context, fid string, p seal.Payload, activation string) error {
	if w.cfg.Async == nil {
		return apierr.New(apierr.BadRequest, "this worker does not run async invocations")
	}
	kv := w.cfg.Async.Stores.Nonces
	key := "n." + seal.SHA256Hex(append([]byte(fid+"\x00"), p.Nonce[:]...))
	for range 2 {
		e, err := kv.Get(ctx, key)
		if err == nil {
			if string(e.Value()) == activation {
				return nil
			}
			return apierr.New(apierr.Replay, "this sealed request was already queued as another activation")
		}
		if !errors.Is(err, jetstream.ErrKeyNotFound) {
			return apierr.New(apierr.Unavailable, "replay store unavailable")
		}
		skew := bus.AsyncNonceWindow / 2
		if d := w.now().Sub(p.Time); d > skew || d < -maxSkew {
			return apierr.New(apierr.StaleRequest, "async request sealed at %s was first seen more than %s later", p.Time.UTC().Format(time.RFC3339), skew)
		}
		if _, err := kv.Create(ctx, key, []byte(activation)); err == nil {
			return nil
		} else if !errors.Is(err, jetstream.ErrKeyExists) {
			return apierr.New(apierr.Unavailable, "replay store unavailable")
		}
	}
	return apierr.New(apierr.Unavailable, "replay store contended")
}

// sealLogs seals a function's stderr to the caller under the response key
// (bound to the request hash); a plaintext invocation's logs stay plain.
func sealLogs(op *opened, stderr []byte) ([]byte, error) {
	if len(stderr) == 0 {
		return nil, nil
	}
	if op.responseKey == nil {
		return bytes.Clone(stderr), nil
	}
	return op.responseKey.Seal(seal.AADLogs, []byte(op.reqHash), stderr)
}
