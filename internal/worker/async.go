package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

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
	// Attempts is how many times a job is tried (default 3). A job whose
	// attempts all failed for platform reasons, or whose worker died on
	// the last one, goes to the dead-letter subject.
	Attempts int
	// Backoff is the delay before retry n (the last value repeats;
	// default 1 s, 5 s, 30 s).
	Backoff []time.Duration
	// Started, if set, is called when an attempt starts, before the
	// function runs (observability and tests).
	Started func(activation string, attempt int)
}

func (c *AsyncConfig) defaults() {
	if c.AckWait <= 0 {
		c.AckWait = 30 * time.Second
	}
	if c.Attempts <= 0 {
		c.Attempts = 3
	}
	if len(c.Backoff) == 0 {
		c.Backoff = []time.Duration{time.Second, 5 * time.Second, 30 * time.Second}
	}
}

// runAsync pulls jobs from the shared durable consumer while ctx lasts, at
// most Concurrency at once, and waits for the jobs it started.
func (w *Worker) runAsync(ctx context.Context) error {
	a := w.cfg.Async
	a.defaults()
	cons, err := a.Stores.JS.CreateOrUpdateConsumer(ctx, bus.StreamAsync, jetstream.ConsumerConfig{
		Durable: bus.ConsumerAsync, AckPolicy: jetstream.AckExplicitPolicy, AckWait: a.AckWait,
		// One delivery more than the attempts: a job whose worker died on
		// its last attempt is delivered once more, to be dead-lettered.
		MaxDeliver: a.Attempts + 1, MaxAckPending: -1, FilterSubject: bus.SubjectAsyncPrefix + ">",
	})
	if err != nil {
		return fmt.Errorf("creating async consumer: %w", err)
	}
	store := async.NewStore(a.Stores, w.now)
	sem := make(chan struct{}, w.cfg.Concurrency)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return nil
		}
		fctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		batch, err := cons.Fetch(1, jetstream.FetchContext(fctx))
		if err != nil {
			cancel()
			<-sem
			if ctx.Err() != nil {
				return nil
			}
			w.log.Warn("fetching async jobs", "err", err)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(time.Second):
			}
			continue
		}
		got := false
		for m := range batch.Messages() {
			got = true
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				w.handleJob(ctx, store, m)
			}()
		}
		cancel()
		if !got {
			<-sem
		}
	}
}

// retryable codes are platform failures: the function did not run to a
// result, and another attempt (here or on another worker) may succeed.
func retryable(c apierr.Code) bool {
	switch c {
	case apierr.Unavailable, apierr.NoWorker, apierr.Internal, apierr.ConcurrencyLimit, apierr.TEEPolicy, apierr.Timeout:
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
	attempt := int(meta.NumDelivered)
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
				_ = m.InProgress()
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
	log := w.log.With("activation", id, "namespace", ns, "function", req.Name, "attempt", attempt)
	dl := wire.DeadLetter{Activation: id, Namespace: ns, Name: req.Name, Attempts: attempt}
	if attempt > a.Attempts {
		dl.Code, dl.Reason = apierr.Unavailable, fmt.Sprintf("no attempt completed after %d deliveries (the worker running the last one stopped)", a.Attempts)
		w.finishFailed(ctx, store, m, dl, log)
		return
	}
	_, err = store.Update(ctx, ns, id, func(r *wire.Activation) error {
		r.Status, r.Attempts, r.Worker = wire.StatusRunning, attempt, w.cfg.ID
		if r.Start == 0 {
			r.Start = async.Millis(w.now())
		}
		r.Logs = append(r.Logs, async.LogLine(w.now(), "attempt %d on worker %s", attempt, w.cfg.ID))
		return nil
	})
	switch {
	case errors.Is(err, async.ErrFinal):
		// Completed before (another worker, or this one before a lost ack).
		_ = m.DoubleAck(ctx)
		return
	case apierr.CodeOf(err) == apierr.NotFound:
		dl.Code, dl.Reason = apierr.NotFound, "the activation record does not exist"
		w.deadLetter(ctx, store, m, dl)
		return
	case err != nil:
		log.Warn("updating activation record; will retry", "err", err)
		_ = m.NakWithDelay(a.backoff(attempt))
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
		_ = m.Nak()
		return
	}
	if runErr != nil {
		ae := apierr.From(runErr)
		dl.Code, dl.Reason = ae.Code, ae.Message
		if retryable(ae.Code) && attempt < a.Attempts {
			d := a.backoff(attempt)
			_, err := store.Update(ctx, ns, id, func(r *wire.Activation) error {
				r.Status = wire.StatusQueued
				r.Logs = append(r.Logs, async.LogLine(w.now(), "attempt %d failed: %s; retrying in %s", attempt, ae.Code, d))
				return nil
			})
			if errors.Is(err, async.ErrFinal) {
				_ = m.DoubleAck(ctx)
				return
			}
			_ = m.NakWithDelay(d)
			return
		}
		if retryable(ae.Code) {
			dl.Reason = fmt.Sprintf("all %d attempts failed; last: %s", a.Attempts, ae.Message)
		}
		w.finishFailed(ctx, store, m, dl, log)
		return
	}
	now := w.now()
	_, err = store.Update(ctx, ns, id, func(r *wire.Activation) error {
		r.Version = rep.Version
		r.End = async.Millis(now)
		r.Duration = r.End - r.Start
		r.Response = outcome(req, rep)
		r.Status = r.Response.Status
		r.Receipt, r.Receipts = rep.Receipt, rep.Receipts
		if req.Mode == wire.ModePlain {
			if len(rep.Logs) > 0 {
				r.Logs = append(r.Logs, splitLines(rep.Logs)...)
			}
		} else {
			r.SealedLogs = rep.Logs
		}
		r.Logs = append(r.Logs, async.LogLine(now, "finished: %s", r.Status))
		return nil
	})
	switch {
	case err == nil:
		_ = m.DoubleAck(ctx)
	case errors.Is(err, async.ErrFinal):
		log.Info("activation was completed by another attempt; this result is discarded")
		_ = m.DoubleAck(ctx)
	default:
		log.Warn("recording the activation result failed; will retry", "err", err)
		_ = m.NakWithDelay(a.backoff(attempt))
	}
}

func (a *AsyncConfig) backoff(attempt int) time.Duration {
	return a.Backoff[min(max(attempt-1, 0), len(a.Backoff)-1)]
}

// finishFailed marks the activation failed (platform_error), publishes a
// dead letter, and removes the job from the queue.
func (w *Worker) finishFailed(ctx context.Context, store *async.Store, m jetstream.Msg, dl wire.DeadLetter, log interface{ Warn(string, ...any) }) {
	now := w.now()
	_, err := store.Update(ctx, dl.Namespace, dl.Activation, func(r *wire.Activation) error {
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
		_ = m.DoubleAck(ctx)
		return
	}
	if err != nil && apierr.CodeOf(err) != apierr.NotFound {
		log.Warn("recording the failure; will retry", "err", err)
		_ = m.NakWithDelay(w.cfg.Async.backoff(dl.Attempts))
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
		_ = m.NakWithDelay(time.Second)
		return
	}
	w.log.Warn("job dead-lettered", "activation", dl.Activation, "code", dl.Code, "reason", dl.Reason)
	_ = m.TermWithReason(string(dl.Code))
}

// outcome maps a worker reply to an activation response.
func outcome(req *wire.InvokeRequest, rep *wire.InvokeReply) wire.ActivationResponse {
	r := wire.ActivationResponse{Sealed: req.Mode != wire.ModePlain}
	if rep.Error == nil {
		r.Status, r.Success = wire.StatusSuccess, true
		r.Result = rep.Output
		if r.Sealed {
			r.Result = rep.Ciphertext
		}
		return r
	}
	r.Error, r.Step, r.StepCode = rep.Error, rep.Step, rep.StepCode
	code := rep.Error.Code
	if rep.StepCode != "" {
		code = rep.StepCode
	}
	if code == apierr.FunctionExit {
		r.Status = wire.StatusApplicationError
	} else {
		r.Status = wire.StatusDeveloperError
	}
	return r
}

func splitLines(b []byte) []string {
	var out []string
	for len(b) > 0 && len(out) < async.MaxLogLines {
		i := 0
		for i < len(b) && b[i] != '\n' {
			i++
		}
		out = append(out, string(b[:i]))
		if i < len(b) {
			i++
		}
		b = b[i:]
	}
	return out
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
	return seal.SealSymmetric(op.responseKey, seal.AADLogs, []byte(op.reqHash), stderr)
}
