// Package async queues asynchronous invocations and keeps their activation
// records: the JetStream work queue (at-least-once delivery, a message id
// per activation for publish deduplication, idempotency keys per
// namespace, a bounded number of jobs per namespace, counted by the stream
// and enforced with a compare-and-set publish), the activation records in
// a KV bucket with compare-and-set updates (so an activation completes
// once even when two workers ran it), and the dead-letter subject.
//
// It never drops a job it acknowledged: a submission is refused
// (quota_exceeded, overloaded) before the job is published, or not at all.
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
	"hash/fnv"
	mrand "math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
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
	st    *bus.AsyncStores
	now   func() time.Time
	local *queueLocal
}

// NewStore returns a Store over the async stores; now may be nil. It
// enforces st.Limits.MaxQueuedPerNamespace when it queues.
func NewStore(st *bus.AsyncStores, now func() time.Time) *Store {
	if now == nil {
		now = time.Now
	}
	return &Store{st: st, now: now, local: processLocal}
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
// With an idempotency key that was used before in the namespace, it
// returns the earlier activation with Duplicate set, and queues nothing
// unless the earlier submission stopped before it queued its job (its
// gateway died): then this submission finishes it, under the earlier
// activation id (see resume).
func (s *Store) Submit(ctx context.Context, sub Submission) (wire.Accepted, error) {
	ns := sub.Request.Namespace
	if len(sub.IdempotencyKey) > MaxIdempotencyKey {
		return wire.Accepted{}, apierr.New(apierr.BadRequest, "idempotency key over %d bytes", MaxIdempotencyKey)
	}
	now := s.now()
	id := NewID(now)
	// The namespace's queue depth is counted before anything is written,
	// and checked again, exactly, when the job is published (enqueue).
	q, err := s.admit(ctx, ns)
	if err != nil {
		// A resubmission is answered with its activation, full or not,
		// once its job is known to be queued.
		if sub.IdempotencyKey != "" && apierr.CodeOf(err) == apierr.QuotaExceeded {
			if acc, derr := s.earlier(ctx, ns, sub); !errors.Is(derr, errNoEarlier) {
				if derr != nil {
					return acc, derr
				}
				if queued, qerr := s.queued(ctx, ns, acc.ActivationID); qerr != nil || queued {
					return acc, qerr
				}
			}
		}
		return wire.Accepted{}, err
	}
	defer q.release()
	if sub.IdempotencyKey != "" {
		if _, err := s.st.Activations.Create(ctx, idemKey(ns, sub.IdempotencyKey), []byte(id)); err != nil {
			if !errors.Is(err, jetstream.ErrKeyExists) {
				return wire.Accepted{}, apierr.New(apierr.Unavailable, "activation store unavailable")
			}
			return s.resume(ctx, q, sub)
		}
	}
	// undo is best effort: the caller is refused and holds no id, and a
	// retry with the same idempotency key resumes from what is left.
	undo := func() {
		bg := context.WithoutCancel(ctx)
		_ = s.st.Activations.Delete(bg, recordKey(ns, id)) // best effort, as said
		if sub.IdempotencyKey != "" {
			_ = s.st.Activations.Delete(bg, idemKey(ns, sub.IdempotencyKey)) // as above
		}
	}
	rec, job, err := newJob(id, now, sub)
	if err != nil {
		undo()
		return wire.Accepted{}, err
	}
	if _, err := s.st.Activations.Create(ctx, recordKey(ns, id), rec); err != nil {
		undo()
		return wire.Accepted{}, apierr.New(apierr.Unavailable, "activation store unavailable")
	}
	if err := s.enqueue(ctx, q, id, job); err != nil {
		undo()
		return wire.Accepted{}, err
	}
	s.wake(ns)
	return wire.Accepted{ActivationID: id}, nil
}

// newJob returns the new activation record of a submission and its job
// message.
func newJob(id string, now time.Time, sub Submission) (rec, job []byte, err error) {
	a := wire.Activation{
		ActivationID: id, Namespace: sub.Request.Namespace, Name: sub.Request.Name, Version: sub.Request.Version, Kind: sub.Kind,
		Mode: sub.Request.Mode, Status: wire.StatusQueued, Submitted: Millis(now), IdempotencyKey: sub.IdempotencyKey,
		Trigger: sub.Trigger, Rule: sub.Rule, Logs: []string{LogLine(now, "queued")},
	}
	if a.Mode == wire.ModePlain {
		a.Trust = wire.TrustGatewayTrusted
	}
	if rec, err = json.Marshal(a); err != nil {
		return nil, nil, err
	}
	req := sub.Request
	req.Activation = id
	if job, err = json.Marshal(wire.AsyncJob{Activation: id, Request: req, Submitted: now.UTC()}); err != nil {
		return nil, nil, err
	}
	if len(job) > bus.MaxPayload-64<<10 {
		return nil, nil, apierr.New(apierr.PayloadTooLarge, "queued invocation would be %d bytes; the queue takes at most %d", len(job), bus.MaxPayload-64<<10)
	}
	return rec, job, nil
}

// wake tells idle workers that the namespace has a job; they would find it
// at their next poll.
func (s *Store) wake(ns string) {
	// Best effort, as said: the job is queued already.
	_ = s.st.JS.Conn().Publish(bus.SubjectAsyncQueued, []byte(ns))
}

// resume answers a submission whose idempotency key an earlier one
// claimed. A submission writes the key, then the record, then the job; a
// gateway that dies between those steps leaves a key without a record, or
// a record without a job, and its client, which got no answer, resubmits.
// That resubmission finishes the earlier one: it writes the record if
// there is none and queues its own job under the earlier activation id if
// the queue does not hold one, so that an acknowledged activation always
// runs. Both steps are safe against the earlier submission still being in
// progress: the record is created only if absent, and the job's message id
// is the activation id, which JetStream deduplicates for
// bus.AsyncDedupWindow (far longer than a submission takes).
func (s *Store) resume(ctx context.Context, q *admission, sub Submission) (wire.Accepted, error) {
	ns := sub.Request.Namespace
	acc, err := s.earlier(ctx, ns, sub)
	if errors.Is(err, errNoEarlier) {
		return wire.Accepted{}, apierr.New(apierr.Unavailable, "activation store unavailable")
	}
	if err != nil {
		return acc, err
	}
	id, now := acc.ActivationID, s.now()
	rec, job, err := newJob(id, now, sub)
	if err != nil {
		return wire.Accepted{}, err
	}
	if _, err := s.st.Activations.Create(ctx, recordKey(ns, id), rec); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
		return wire.Accepted{}, apierr.New(apierr.Unavailable, "activation store unavailable")
	}
	queued, err := s.queued(ctx, ns, id)
	if err != nil || queued {
		return acc, err
	}
	if err := s.enqueue(ctx, q, id, job); err != nil {
		return wire.Accepted{}, err
	}
	s.wake(ns)
	return acc, nil
}

// queued reports whether activation id is past queueing: its record is
// no longer queued (a worker took it), or the queue holds its job. A
// record that is missing reports false.
func (s *Store) queued(ctx context.Context, ns, id string) (bool, error) {
	rec, _, err := s.Get(ctx, ns, id)
	switch {
	case apierr.CodeOf(err) == apierr.NotFound:
		return false, nil
	case err != nil:
		return false, err
	case rec.Status != wire.StatusQueued:
		return true, nil
	}
	return s.holds(ctx, bus.SubjectAsyncPrefix+ns, id)
}

// holds reports whether the queue has a message with id as its message id
// on subject. It reads the subject's messages one by one, which is as
// many as the namespace has jobs queued or running (at most its quota);
// only resubmissions need it.
func (s *Store) holds(ctx context.Context, subject, id string) (bool, error) {
	for seq := uint64(1); ; {
		m, err := s.st.Queue.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subject))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return false, nil
		}
		if err != nil {
			return false, apierr.New(apierr.Unavailable, "async queue unavailable")
		}
		if m.Header.Get(jetstream.MsgIDHeader) == id {
			return true, nil
		}
		seq = m.Sequence + 1
	}
}

// queueLocal is what one process keeps per namespace to queue jobs: a
// lock, so that its own submissions to a namespace take turns instead of
// failing each other's compare-and-set, and the sequence of the last job
// it saw queued there, the guess for the next compare-and-set. Neither is
// needed for correctness: the stream decides.
type queueLocal struct {
	stripes [64]stripe
}

// stripe is the lock of the namespaces that hash to it.
type stripe struct {
	sync.Mutex
	last map[string]uint64 // namespace → a job sequence on its subject
}

// processLocal is shared by every Store of the process.
var processLocal = new(queueLocal)

// admission is one submission's turn at a namespace's queue.
type admission struct {
	ns, subject string
	limit       int    // MaxQueuedPerNamespace; <= 0: none
	queued      uint64 // the namespace's jobs when last counted
	stripe      *stripe
}

func (q *admission) release() {
	if q.stripe != nil {
		q.stripe.Unlock()
	}
}

// admit counts the namespace's queued jobs and refuses the submission
// with QuotaExceeded when there are MaxQueuedPerNamespace already. It
// takes the namespace's local turn, which release gives back.
func (s *Store) admit(ctx context.Context, ns string) (*admission, error) {
	q := &admission{ns: ns, subject: bus.SubjectAsyncPrefix + ns, limit: s.st.Limits.MaxQueuedPerNamespace}
	if q.limit <= 0 {
		return q, nil
	}
	h := fnv.New32a()
	h.Write([]byte(ns))
	q.stripe = &s.local.stripes[h.Sum32()%uint32(len(s.local.stripes))]
	q.stripe.Lock()
	if err := s.count(ctx, q); err != nil {
		q.release()
		return nil, err
	}
	return q, nil
}

// count reads how many jobs the namespace has in the stream, waiting or
// running (a job leaves when a worker acknowledges it), and refuses when
// that is the limit.
func (s *Store) count(ctx context.Context, q *admission) error {
	info, err := s.st.Queue.Info(ctx, jetstream.WithSubjectFilter(q.subject))
	if err != nil {
		return apierr.New(apierr.Unavailable, "async queue unavailable")
	}
	q.queued = info.State.Subjects[q.subject]
	if q.queued == 0 && q.stripe.last != nil {
		delete(q.stripe.last, q.ns)
	}
	if q.queued >= uint64(q.limit) {
		return apierr.New(apierr.QuotaExceeded, "namespace %q has %d async jobs queued or running, its quota of %d; wait for some to finish", q.ns, q.queued, q.limit)
	}
	return nil
}

// maxEnqueueTries bounds the compare-and-set attempts of one submission
// (other gateways queueing for the same namespace at the same moment).
const maxEnqueueTries = 16

// enqueue publishes the job on the namespace's subject.
//
// With a quota, the publish is a compare-and-set on the subject: it
// states the sequence L of the subject's last message (0: none), and the
// stream refuses it if the last message is another. L was assigned before
// the count, and every message added later has a higher sequence; if the
// last is still L, every message added since the count has been removed
// again, so the namespace holds at most the counted number, fewer than
// the quota. The check is the stream's own state: it holds across
// gateways and needs no cleanup after a crash. On a conflict the stream
// names the last sequence (or it is read), the jobs are counted again and
// the publish is tried again.
func (s *Store) enqueue(ctx context.Context, q *admission, id string, job []byte) error {
	opts := []jetstream.PublishOpt{jetstream.WithMsgID(id)}
	if q.limit <= 0 {
		_, err := s.st.JS.Publish(ctx, q.subject, job, opts...)
		return s.publishErr(err)
	}
	for try := range maxEnqueueTries {
		if try > 0 {
			if err := s.count(ctx, q); err != nil {
				return err
			}
		}
		var last uint64
		if q.queued > 0 {
			last = q.stripe.last[q.ns]
		}
		ack, err := s.st.JS.Publish(ctx, q.subject, job, append(opts, jetstream.WithExpectLastSequencePerSubject(last))...)
		if err == nil {
			q.remember(ack.Sequence)
			return nil
		}
		seq, ok, err := s.lastOnConflict(ctx, q.subject, err)
		if !ok {
			return s.publishErr(err)
		}
		q.remember(seq)
		if try > 0 {
			// Not only a stale guess: another gateway is queueing for
			// this namespace too. Let it finish.
			time.Sleep(time.Duration(mrand.Int64N(int64(time.Millisecond) << min(try, 5))))
		}
	}
	return apierr.New(apierr.Unavailable, "the async queue of namespace %q is contended; try again", q.ns)
}

func (q *admission) remember(seq uint64) {
	if q.stripe.last == nil {
		q.stripe.last = map[string]uint64{}
	}
	q.stripe.last[q.ns] = seq
}

// lastOnConflict reports whether err is a failed compare-and-set and, if
// so, the sequence of the subject's last message: from the error (a
// single-replica stream names it) or read from the stream.
func (s *Store) lastOnConflict(ctx context.Context, subject string, err error) (uint64, bool, error) {
	var ae *jetstream.APIError
	if !errors.As(err, &ae) || (ae.ErrorCode != jetstream.JSErrCodeStreamWrongLastSequence && ae.ErrorCode != jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
		return 0, false, err
	}
	if n, ok := strings.CutPrefix(ae.Description, "wrong last sequence: "); ok {
		if seq, perr := strconv.ParseUint(n, 10, 64); perr == nil {
			return seq, true, nil
		}
	}
	m, gerr := s.st.Queue.GetLastMsgForSubject(ctx, subject)
	switch {
	case errors.Is(gerr, jetstream.ErrMsgNotFound):
		return 0, true, nil
	case gerr != nil:
		return 0, false, gerr
	}
	return m.Sequence, true, nil
}

// publishErr maps a failed publish to the caller's error: a full queue
// (the stream's MaxQueueJobs or MaxQueueBytes) is Overloaded, anything
// else Unavailable.
func (s *Store) publishErr(err error) error {
	if err == nil {
		return nil
	}
	var ae *jetstream.APIError
	if errors.As(err, &ae) && ae.ErrorCode == jsErrCodeStoreFailed && strings.HasPrefix(ae.Description, "maximum ") {
		return apierr.New(apierr.Overloaded, "the async queue is full (%s; it holds at most %s jobs and %s bytes); try again later",
			ae.Description, limitString(s.st.Limits.MaxQueueJobs), limitString(s.st.Limits.MaxQueueBytes))
	}
	return apierr.New(apierr.Unavailable, "queueing the invocation failed")
}

// jsErrCodeStoreFailed is JetStream's "storing the message failed",
// whose description names the limit a stream that discards new messages
// reached ("maximum messages exceeded", "maximum bytes exceeded").
const jsErrCodeStoreFailed jetstream.ErrorCode = 10077

func limitString(n int64) string {
	if n < 0 {
		return "unlimited"
	}
	return strconv.FormatInt(n, 10)
}

// errNoEarlier: the idempotency key names no activation.
var errNoEarlier = errors.New("async: idempotency key not used")

// earlier answers a submission whose idempotency key was used before in
// the namespace: the earlier activation, marked Duplicate, or
// IdempotencyConflict if it was for another function or sequence. It
// returns errNoEarlier if the key is unused.
func (s *Store) earlier(ctx context.Context, ns string, sub Submission) (wire.Accepted, error) {
	e, err := s.st.Activations.Get(ctx, idemKey(ns, sub.IdempotencyKey))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return wire.Accepted{}, errNoEarlier
	}
	if err != nil || !ValidID(string(e.Value())) {
		return wire.Accepted{}, apierr.New(apierr.Unavailable, "activation store unavailable")
	}
	id := string(e.Value())
	// The key stands for one invocation: reusing it for another function
	// is a mistake to report, not to answer with an activation of
	// something else. (The input is sealed, so the name and kind are all
	// that can be compared.) A record not written yet, by a submission
	// still in progress, is not checked.
	if rec, _, err := s.Get(ctx, ns, id); err == nil && (rec.Name != sub.Request.Name || rec.Kind != sub.Kind) {
		return wire.Accepted{}, apierr.New(apierr.IdempotencyConflict, "idempotency key already used for %s %q (activation %s)", rec.Kind, rec.Name, id)
	}
	return wire.Accepted{ActivationID: id, Duplicate: true}, nil
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
	// Before, an activation id, keeps only the activations older than it:
	// a page starts after the last activation of the one before (the
	// cursor ListPage returns).
	Before string
	// Skip leaves out the first Skip activations that pass the filters
	// (the newest), for paging.
	Skip int
	// Name keeps only activations of this function or sequence.
	Name string
	// Keep, if set, keeps only the activations for which it is true.
	Keep func(*wire.Activation) bool
}

// MaxListScan bounds the records one List or ListPage call reads, however
// many it skips or filters out.
const MaxListScan = 20 * MaxList

// List returns a namespace's activations, newest first: at most o.Limit
// (30 if o.Limit <= 0, at most MaxList) of those that pass the filters,
// after the first o.Skip of them. It reads at most MaxListScan records,
// the newest, however many it skips or filters out.
func (s *Store) List(ctx context.Context, ns string, o ListOptions) ([]*wire.Activation, error) {
	out, _, err := s.ListPage(ctx, ns, o)
	return out, err
}

// ListPage is List, with the cursor of the next page: the id to pass as
// o.Before to continue, or "" when no older activation is left. Ids sort
// by submission time (NewID), so a page is the keys older than o.Before,
// newest first; it reads records from there only, o.Limit of them when
// nothing is filtered out, and at most MaxListScan. A filtered page may be
// short, or even empty with a next cursor, when it stopped at that bound;
// the page after the last match may be empty.
func (s *Store) ListPage(ctx context.Context, ns string, o ListOptions) ([]*wire.Activation, string, error) {
	if o.Limit <= 0 {
		o.Limit = 30
	}
	o.Limit = min(o.Limit, MaxList)
	if o.Before != "" && !ValidID(o.Before) {
		return nil, "", apierr.New(apierr.BadRequest, "before must be an activation id (32 lower-case hex digits)")
	}
	prefix := "a." + ns + "."
	keys, err := bus.Keys(ctx, s.st.JS, s.st.Activations, prefix+"*") // running activations change all the time
	if err != nil {
		return nil, "", apierr.New(apierr.Unavailable, "activation store unavailable")
	}
	// Only the ids are kept, the older than the cursor; the listing reads
	// keys, not records.
	var ids []string
	for _, k := range keys {
		if id := strings.TrimPrefix(k, prefix); o.Before == "" || id < o.Before {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	slices.Reverse(ids)
	out, last := []*wire.Activation{}, ""
	for i, id := range ids {
		if len(out) == o.Limit {
			return out, last, nil
		}
		if i == MaxListScan {
			// Continue after the last record read.
			return out, ids[i-1], nil
		}
		a, _, err := s.Get(ctx, ns, id)
		if apierr.CodeOf(err) == apierr.NotFound {
			continue
		}
		if err != nil {
			return nil, "", err
		}
		if (o.Name != "" && a.Name != o.Name) || (o.Keep != nil && !o.Keep(a)) {
			continue
		}
		if o.Skip > 0 {
			o.Skip--
			continue
		}
		out, last = append(out, a), id
	}
	return out, "", nil
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
			_ = s.st.Dead.DeleteConsumer(dctx, info.Name) // best effort: InactiveThreshold removes it
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
	// Stream order is the order letters arrived; workers stamp Time before
	// they publish, so two written at once may arrive the other way round.
	// The list is newest first by Time.
	slices.SortStableFunc(out, func(a, b wire.DeadLetter) int { return b.Time.Compare(a.Time) })
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
	defer func() { _ = w.Stop() }() // fails only once the subscription or its connection is closed
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
