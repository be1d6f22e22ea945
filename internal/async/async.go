// Package async queues asynchronous invocations and keeps their activation
// records: the JetStream work queue (at-least-once delivery, a message id
// per activation for publish deduplication, idempotency keys per
// namespace), the activation records in a KV bucket with compare-and-set
// updates (so an activation completes once even when two workers ran it),
// and the dead-letter subject.
//
// Everything here lives in untrusted storage. A job carries the sealed
// request as the client made it, and a record the result sealed to the
// caller; this package never sees a confidential plaintext.
package async

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/bundle"
	"github.com/cloister-faas/cloister/internal/bus"
	"github.com/cloister-faas/cloister/internal/wire"
)

// Limits.
const (
	// MaxIdempotencyKey bounds an idempotency key's length.
	MaxIdempotencyKey = 256
	// MaxList bounds one page of activations.
	MaxList = 200
	// MaxLogLines bounds the platform log lines of a record.
	MaxLogLines = 64
)

// ErrFinal is returned by Update when the record is already final: the
// activation completed (possibly on another worker) and must not change.
var ErrFinal = errors.New("async: activation already final")

// Store reads and writes activation records and queues jobs.
type Store struct {
	st  *bus.AsyncStores
	now func() time.Time
}

// NewStore returns a Store over the async stores; now may be nil.
func NewStore(st *bus.AsyncStores, now func() time.Time) *Store {
	if now == nil {
		now = time.Now
	}
	return &Store{st: st, now: now}
}

// NewID returns a new activation id: 16 bytes, 8 of Unix nanoseconds (so
// ids sort by time) and 8 random, as 32 lower-case hex digits (the shape of
// an OpenWhisk activation id).
func NewID(now time.Time) string {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(now.UnixNano()))
	rand.Read(b[8:])
	return hex.EncodeToString(b[:])
}

// ValidID reports whether id has the shape of an activation id.
func ValidID(id string) bool {
	return len(id) == 32 && strings.Trim(id, "0123456789abcdef") == ""
}

func recordKey(ns, id string) string { return "a." + ns + "." + id }

func idemKey(ns, key string) string {
	h := sha256.Sum256([]byte(key))
	return "i." + ns + "." + hex.EncodeToString(h[:])
}

// Millis is t in milliseconds since the Unix epoch.
func Millis(t time.Time) int64 { return t.UnixMilli() }

// LogLine formats a platform log line.
func LogLine(t time.Time, format string, args ...any) string {
	return t.UTC().Format(time.RFC3339Nano) + " " + fmt.Sprintf(format, args...)
}

// Submission is what Submit needs beyond the request.
type Submission struct {
	Request        wire.InvokeRequest
	Kind           string // "function" or "sequence"
	IdempotencyKey string
	Trigger, Rule  string
}

// Submit creates the activation record (status queued) and queues the job.
// With an idempotency key that was used before in the namespace, it queues
// nothing and returns the earlier activation with Duplicate set.
func (s *Store) Submit(ctx context.Context, sub Submission) (wire.Accepted, error) {
	ns := sub.Request.Namespace
	if len(sub.IdempotencyKey) > MaxIdempotencyKey {
		return wire.Accepted{}, apierr.New(apierr.BadRequest, "idempotency key over %d bytes", MaxIdempotencyKey)
	}
	now := s.now()
	id := NewID(now)
	if sub.IdempotencyKey != "" {
		k := idemKey(ns, sub.IdempotencyKey)
		if _, err := s.st.Activations.Create(ctx, k, []byte(id)); err != nil {
			if !errors.Is(err, jetstream.ErrKeyExists) {
				return wire.Accepted{}, apierr.New(apierr.Unavailable, "activation store unavailable")
			}
			e, err := s.st.Activations.Get(ctx, k)
			if err != nil || !ValidID(string(e.Value())) {
				return wire.Accepted{}, apierr.New(apierr.Unavailable, "activation store unavailable")
			}
			earlier := string(e.Value())
			// The key stands for one invocation: reusing it for another
			// function is a mistake to report, not to answer with an
			// activation of something else. (The input is sealed, so the
			// name and kind are all that can be compared.) A record not
			// written yet, by a submission still in progress, is not
			// checked.
			if rec, _, err := s.Get(ctx, ns, earlier); err == nil && (rec.Name != sub.Request.Name || rec.Kind != sub.Kind) {
				return wire.Accepted{}, apierr.New(apierr.IdempotencyConflict, "idempotency key already used for %s %q (activation %s)", rec.Kind, rec.Name, earlier)
			}
			return wire.Accepted{ActivationID: earlier, Duplicate: true}, nil
		}
	}
	undo := func() {
		bg := context.WithoutCancel(ctx)
		_ = s.st.Activations.Delete(bg, recordKey(ns, id))
		if sub.IdempotencyKey != "" {
			_ = s.st.Activations.Delete(bg, idemKey(ns, sub.IdempotencyKey))
		}
	}
	rec := wire.Activation{
		ActivationID: id, Namespace: ns, Name: sub.Request.Name, Version: sub.Request.Version, Kind: sub.Kind,
		Mode: sub.Request.Mode, Status: wire.StatusQueued, Submitted: Millis(now), IdempotencyKey: sub.IdempotencyKey,
		Trigger: sub.Trigger, Rule: sub.Rule, Logs: []string{LogLine(now, "queued")},
	}
	if rec.Mode == wire.ModePlain {
		rec.Trust = wire.TrustGatewayTrusted
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return wire.Accepted{}, err
	}
	if _, err := s.st.Activations.Create(ctx, recordKey(ns, id), b); err != nil {
		undo()
		return wire.Accepted{}, apierr.New(apierr.Unavailable, "activation store unavailable")
	}
	req := sub.Request
	req.Activation = id
	job, err := json.Marshal(wire.AsyncJob{Activation: id, Request: req, Submitted: now.UTC()})
	if err != nil {
		undo()
		return wire.Accepted{}, err
	}
	if len(job) > bus.MaxPayload-64<<10 {
		undo()
		return wire.Accepted{}, apierr.New(apierr.PayloadTooLarge, "queued invocation would be %d bytes; the queue takes at most %d", len(job), bus.MaxPayload-64<<10)
	}
	if _, err := s.st.JS.Publish(ctx, bus.SubjectAsyncPrefix+ns, job, jetstream.WithMsgID(id)); err != nil {
		undo()
		return wire.Accepted{}, apierr.New(apierr.Unavailable, "queueing the invocation failed")
	}
	return wire.Accepted{ActivationID: id}, nil
}

// Get returns a record and its revision; apierr NotFound if there is none.
func (s *Store) Get(ctx context.Context, ns, id string) (*wire.Activation, uint64, error) {
	if !ValidID(id) {
		return nil, 0, apierr.New(apierr.BadRequest, "activation id must be 32 lower-case hex digits")
	}
	e, err := s.st.Activations.Get(ctx, recordKey(ns, id))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, apierr.New(apierr.NotFound, "activation %s not found in namespace %q", id, ns)
	}
	if err != nil {
		return nil, 0, apierr.New(apierr.Unavailable, "activation store unavailable")
	}
	var a wire.Activation
	if err := json.Unmarshal(e.Value(), &a); err != nil {
		return nil, 0, apierr.New(apierr.Internal, "corrupt activation record %s", id)
	}
	return &a, e.Revision(), nil
}

// Update applies fn to the record with compare-and-set, retrying when
// another writer got there first. fn sees the latest record; if the record
// is final, Update returns ErrFinal without calling fn.
func (s *Store) Update(ctx context.Context, ns, id string, fn func(*wire.Activation) error) (*wire.Activation, error) {
	for range 20 {
		a, rev, err := s.Get(ctx, ns, id)
		if err != nil {
			return nil, err
		}
		if wire.FinalStatus(a.Status) {
			return a, ErrFinal
		}
		if err := fn(a); err != nil {
			return a, err
		}
		if len(a.Logs) > MaxLogLines {
			a.Logs = append(a.Logs[:1:1], a.Logs[len(a.Logs)-MaxLogLines+1:]...)
		}
		b, err := json.Marshal(a)
		if err != nil {
			return nil, err
		}
		if _, err := s.st.Activations.Update(ctx, recordKey(ns, id), b, rev); err == nil {
			return a, nil
		} else if !isWrongRevision(err) {
			return nil, apierr.New(apierr.Unavailable, "activation store unavailable")
		}
	}
	return nil, apierr.New(apierr.Unavailable, "activation record %s is contended", id)
}

func isWrongRevision(err error) bool {
	var ae *jetstream.APIError
	return errors.As(err, &ae) && ae.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence
}

// ListOptions filter List.
type ListOptions struct {
	Limit int
	// Name keeps only activations of this function or sequence.
	Name string
}

// List returns a namespace's activations, newest first.
func (s *Store) List(ctx context.Context, ns string, o ListOptions) ([]*wire.Activation, error) {
	if o.Limit <= 0 {
		o.Limit = 30
	}
	o.Limit = min(o.Limit, MaxList)
	lister, err := s.st.Activations.ListKeysFiltered(ctx, "a."+ns+".*")
	if err != nil {
		return nil, apierr.New(apierr.Unavailable, "activation store unavailable")
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	slices.Reverse(keys)
	out := []*wire.Activation{}
	for i, k := range keys {
		if len(out) == o.Limit || i >= 20*MaxList {
			break
		}
		a, _, err := s.Get(ctx, ns, strings.TrimPrefix(k, "a."+ns+"."))
		if apierr.CodeOf(err) == apierr.NotFound {
			continue
		}
		if err != nil {
			return nil, err
		}
		if o.Name != "" && a.Name != o.Name {
			continue
		}
		out = append(out, a)
	}
	return out, nil
}

// DeadLetter publishes d on the dead-letter subject of its namespace.
func (s *Store) DeadLetter(ctx context.Context, d wire.DeadLetter) error {
	if d.Time.IsZero() {
		d.Time = s.now().UTC()
	}
	ns := d.Namespace
	if !bundle.ValidName(ns) {
		ns = "_"
	}
	b, err := json.Marshal(d)
	if err != nil {
		return err
	}
	m := nats.NewMsg(bus.SubjectDeadPrefix + ns)
	m.Data = b
	m.Header.Set(bus.HeaderDeadReason, string(d.Code))
	if _, err := s.st.JS.PublishMsg(ctx, m); err != nil {
		return fmt.Errorf("publishing dead letter: %w", err)
	}
	return nil
}

// MaxDeadScan bounds the dead letters one DeadLetters call reads.
const MaxDeadScan = 100_000

// DeadLetters returns the namespace's dead letters published at or after
// since (the zero time: all the stream keeps, 30 days), newest first, at
// most limit of them (30 if limit <= 0, at most MaxList). The jobs they
// carry (up to the queue's message size each) are left out; the stream
// keeps them. More than MaxDeadScan dead letters since then is a
// BadRequest that asks for a later since.
func (s *Store) DeadLetters(ctx context.Context, ns string, since time.Time, limit int) ([]wire.DeadLetter, error) {
	if limit <= 0 {
		limit = 30
	}
	limit = min(limit, MaxList)
	// An ephemeral consumer per call, deleted at the end; one left behind
	// (the process stopped) goes after InactiveThreshold.
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{bus.SubjectDeadPrefix + ns}, InactiveThreshold: 30 * time.Second}
	if !since.IsZero() {
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &since
	}
	cons, err := s.st.Dead.OrderedConsumer(ctx, cfg)
	if err != nil {
		return nil, apierr.New(apierr.Unavailable, "dead-letter stream unavailable")
	}
	defer func() {
		if info := cons.CachedInfo(); info != nil {
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			_ = s.st.Dead.DeleteConsumer(dctx, info.Name)
			cancel()
		}
	}()
	pending := cons.CachedInfo().NumPending
	if pending > MaxDeadScan {
		return nil, apierr.New(apierr.BadRequest, "%d dead letters since %s; ask for a later since (at most %d are read)", pending, since.Format(time.RFC3339), MaxDeadScan)
	}
	ring := make([]wire.DeadLetter, 0, limit) // the newest, oldest first, as a ring from next
	next := 0
	for read := uint64(0); read < pending; {
		batch, err := cons.Fetch(int(min(pending-read, 256)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return nil, apierr.New(apierr.Unavailable, "dead-letter stream unavailable")
		}
		n := 0
		for m := range batch.Messages() {
			n++
			var d wire.DeadLetter
			if json.Unmarshal(m.Data(), &d) != nil {
				d = wire.DeadLetter{Code: apierr.Internal, Reason: "unreadable dead letter"}
			}
			d.Job, d.JobBase64 = nil, nil
			if len(ring) < limit {
				ring = append(ring, d)
			} else {
				ring[next] = d
				next = (next + 1) % limit
			}
		}
		if batch.Error() != nil || n == 0 {
			return nil, apierr.New(apierr.Unavailable, "dead-letter stream unavailable")
		}
		read += uint64(n)
	}
	out := make([]wire.DeadLetter, 0, len(ring))
	for i := range ring {
		out = append(out, ring[(next+len(ring)-1-i)%len(ring)])
	}
	return out, nil
}

// Wait returns the record once it is final, or the latest record when ctx
// ends first (with no error: the caller decides what a pending activation
// means). It watches the record's key, so it costs no polling.
func (s *Store) Wait(ctx context.Context, ns, id string) (*wire.Activation, error) {
	if !ValidID(id) {
		return nil, apierr.New(apierr.BadRequest, "activation id must be 32 lower-case hex digits")
	}
	w, err := s.st.Activations.Watch(ctx, recordKey(ns, id))
	if err != nil {
		return nil, apierr.New(apierr.Unavailable, "activation store unavailable")
	}
	defer func() { _ = w.Stop() }()
	var last *wire.Activation
	for {
		select {
		case <-ctx.Done():
			if last == nil {
				a, _, err := s.Get(context.WithoutCancel(ctx), ns, id)
				return a, err
			}
			return last, nil
		case e, ok := <-w.Updates():
			if !ok {
				a, _, err := s.Get(context.WithoutCancel(ctx), ns, id)
				return a, err
			}
			if e == nil || e.Operation() != jetstream.KeyValuePut {
				continue
			}
			var a wire.Activation
			if err := json.Unmarshal(e.Value(), &a); err != nil {
				return nil, apierr.New(apierr.Internal, "corrupt activation record %s", id)
			}
			last = &a
			if wire.FinalStatus(a.Status) {
				return last, nil
			}
		}
	}
}

// Record stores a finished activation that was not queued: a sequence
// the gateway ran step by step for a plaintext (gateway-trusted) client.
// Its id must be new.
func (s *Store) Record(ctx context.Context, a *wire.Activation) error {
	if !ValidID(a.ActivationID) || !bundle.ValidName(a.Namespace) {
		return apierr.New(apierr.BadRequest, "malformed activation record")
	}
	b, err := json.Marshal(a)
	if err != nil {
		return err
	}
	if _, err := s.st.Activations.Create(ctx, recordKey(a.Namespace, a.ActivationID), b); err != nil {
		return apierr.New(apierr.Unavailable, "activation store unavailable")
	}
	return nil
}
