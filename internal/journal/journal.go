// Package journal keeps an append-only log of sealed records in a
// replicated JetStream stream, written by one writer at a time and read by
// any number of followers. The coordinators build their durable state on
// it (the ledger's order, the state anchor, the manifest history and the
// admitted workers), so that a standby that takes over continues the same
// log instead of starting a fork (docs/adr/0007-coordinator-failover.md).
//
// NATS is untrusted: each record is sealed with AES-GCM under a key only
// the coordinators hold, and its additional data binds the stream
// sequence and the hash of the record before it. A follower therefore
// notices a record that was altered, forged, dropped from the middle,
// reordered, or moved from another journal. Two things it cannot notice
// alone are a journal cut back at its end or replaced by an older copy;
// a follower that had read further refuses the shorter journal
// (ErrRolledBack).
//
// Writes are fenced: Append publishes with JetStream's expected last
// sequence, so a record is stored only if the writer had read every record
// before it. A writer that lost its lease and did not notice yet cannot
// append behind its successor's back (ErrFenced).
package journal

import (
	"context"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cloister-faas/cloister/internal/bus"
	"github.com/cloister-faas/cloister/internal/seal"
)

// Errors.
var (
	// ErrFenced: another writer appended since this journal last read;
	// the record was not stored. The caller stops writing, or catches up
	// and tries again if it still holds the lease.
	ErrFenced = errors.New("journal: another writer appended first")
	// ErrBehind: an earlier append's outcome is unknown (its
	// acknowledgement was lost), so the journal must catch up before it
	// appends again.
	ErrBehind = errors.New("journal: catch up before appending")
	// ErrRolledBack: the stream is shorter than what this journal has
	// already read, or starts over: it was cut back or replaced.
	ErrRolledBack = errors.New("journal: the stream is behind what was already read (rolled back or replaced)")
	// ErrCorrupt: a record does not open under the journal's key and
	// chain: it was altered, forged, reordered or a record is missing.
	ErrCorrupt = errors.New("journal: a record does not verify")
	// ErrTooLarge: a record is larger than MaxRecord.
	ErrTooLarge = errors.New("journal: record too large")
)

// MaxRecord bounds a record's plaintext, below NATS's default maximum
// payload of 1 MiB with room for the headers and the seal.
const MaxRecord = 1<<20 - 8<<10

// Config configures Open.
type Config struct {
	JS jetstream.JetStream
	// Stream is the stream's name; it holds the one subject Subject.
	Stream, Subject string
	// Replicas is the stream's replica count (3 on a 3-node cluster).
	Replicas int
	// Key is the secret the records are sealed under (at least 32 bytes:
	// the coordinator's master secret); the AES key is derived from it
	// and Label.
	Key []byte
	// Label separates journals that share Key, e.g.
	// "cloister/v1/journal/ledger".
	Label string
	// Apply is given each record, in order, as CatchUp reads it: records
	// that other writers appended and records of this journal's own
	// appends whose outcome was unknown. It is never called from Append.
	// An error stops CatchUp at that record, which is read again next
	// time.
	Apply func(seq uint64, rec []byte) error
}

// Journal is one writer's or follower's view of a journal. It is safe for
// concurrent use; appends and catch-ups are serialised.
type Journal struct {
	cfg    Config
	aead   cipher.AEAD
	stream jetstream.Stream

	mu     sync.Mutex
	seq    uint64   // the last record read or written
	prev   [32]byte // its hash (zero before the first)
	behind bool     // an append's outcome is unknown
}

// Open creates the stream if needed (or updates its replica count) and
// returns a journal positioned before the first record.
func Open(ctx context.Context, cfg Config) (*Journal, error) {
	if len(cfg.Key) < 32 {
		return nil, errors.New("journal: key missing")
	}
	if cfg.Stream == "" || cfg.Subject == "" || cfg.Label == "" || cfg.Apply == nil {
		return nil, errors.New("journal: stream, subject, label and apply are required")
	}
	g, err := seal.DeriveAEAD(cfg.Key, cfg.Label)
	if err != nil {
		return nil, err
	}
	var st jetstream.Stream
	err = bus.RetryTransient(ctx, func(ctx context.Context) (err error) {
		st, err = cfg.JS.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
			Name:     cfg.Stream,
			Subjects: []string{cfg.Subject},
			Storage:  jetstream.FileStorage,
			Replicas: max(cfg.Replicas, 1),
			// Nothing is ever removed: the journal is the record.
			Retention:   jetstream.LimitsPolicy,
			Discard:     jetstream.DiscardNew,
			MaxMsgSize:  MaxRecord + 4<<10,
			DenyDelete:  true,
			DenyPurge:   true,
			AllowDirect: true,
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("journal: opening stream %s: %w", cfg.Stream, err)
	}
	return &Journal{cfg: cfg, aead: g, stream: st}, nil
}

// Position returns the sequence of the last record read or written (0:
// none) and its hash. A caller that keeps state derived from the journal
// on disk saves it to Seek to later.
func (j *Journal) Position() (uint64, [32]byte) {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.seq, j.prev
}

// Seek positions the journal after record seq, whose hash is prev, without
// reading: for a caller that restored its state from its own copy. If the
// position is wrong, the next record does not verify (ErrCorrupt) and the
// caller starts over from Seek(0, zero).
func (j *Journal) Seek(seq uint64, prev [32]byte) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.seq, j.prev, j.behind = seq, prev, false
}

func (j *Journal) aad(seq uint64, prev [32]byte) []byte {
	b := make([]byte, 0, len(j.cfg.Label)+8+32)
	b = append(b, j.cfg.Label...)
	b = binary.BigEndian.AppendUint64(b, seq)
	return append(b, prev[:]...)
}

// Append seals rec as the next record and stores it, fenced: it succeeds
// only if no other record was appended since this journal last read or
// wrote. It returns the record's sequence once the stream has stored it
// (on every replica's quorum). ErrFenced means another writer was first;
// ErrBehind that an earlier outcome is unknown; both mean CatchUp first.
// After any other error the outcome is unknown and the next Append is
// ErrBehind.
func (j *Journal) Append(ctx context.Context, rec []byte) (uint64, error) {
	if len(rec) > MaxRecord {
		return 0, ErrTooLarge
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.behind {
		return 0, ErrBehind
	}
	seq := j.seq + 1
	msg := make([]byte, 12, 12+len(rec)+j.aead.Overhead())
	rand.Read(msg)
	msg = j.aead.Seal(msg, msg[:12], rec, j.aad(seq, j.prev))
	ack, err := j.cfg.JS.Publish(ctx, j.cfg.Subject, msg, jetstream.WithExpectLastSequence(j.seq), jetstream.WithExpectStream(j.cfg.Stream))
	if err != nil {
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence {
			return 0, ErrFenced
		}
		j.behind = true
		return 0, fmt.Errorf("journal %s: %w", j.cfg.Stream, err)
	}
	if ack.Sequence != seq {
		// The server stored it elsewhere than expected: never happens
		// with the expected-last-sequence check, but do not guess.
		j.behind = true
		return 0, fmt.Errorf("journal %s: stored at %d, expected %d", j.cfg.Stream, ack.Sequence, seq)
	}
	j.seq, j.prev = seq, sha256.Sum256(msg)
	return seq, nil
}

// transientTries bounds how often CatchUp reads again after a failure of
// NATS (no responders while a stream leader is elected, a fetch that timed
// out), transientWait apart: 10 s of waits and at most transientTry a try,
// longer than a JetStream election (4–9 s after a leader dies). transientTry
// bounds each request to the stream: one sent to a leader that has just
// died gets no answer, and nats.go's default wait (5 s) would hold the
// catch-up for seconds after a new leader is there.
const (
	transientTries = 20
	transientWait  = 500 * time.Millisecond
	transientTry   = time.Second
)

// transient marks a failure to read the stream, as opposed to a record
// that does not verify or an Apply that failed: reading again may work.
type transient struct{ err error }

func (t transient) Error() string { return t.err.Error() }
func (t transient) Unwrap() error { return t.err }

// CatchUp reads every record after the journal's position up to the
// stream's end as it is when called, verifies each and hands it to Apply
// in order. It returns the number applied. A failure to read the stream
// is tried again for about 10 s; a record that does not verify or an
// Apply error is returned at once.
func (j *Journal) CatchUp(ctx context.Context) (int, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	total := 0
	for attempt := 1; ; attempt++ {
		n, err := j.catchUpOnce(ctx)
		total += n
		var t transient
		if err == nil || !errors.As(err, &t) || attempt == transientTries || ctx.Err() != nil {
			if errors.As(err, &t) {
				err = t.err
			}
			return total, err
		}
		select {
		case <-ctx.Done():
			return total, t.err
		case <-time.After(transientWait):
		}
	}
}

func (j *Journal) catchUpOnce(ctx context.Context) (int, error) {
	tctx, cancel := context.WithTimeout(ctx, transientTry)
	info, err := j.stream.Info(tctx)
	cancel()
	if err != nil {
		return 0, transient{fmt.Errorf("journal %s: %w", j.cfg.Stream, err)}
	}
	last := info.State.LastSeq
	if last < j.seq || (info.State.Msgs > 0 && info.State.FirstSeq != 1) {
		return 0, fmt.Errorf("%w: %s ends at %d (first %d), read up to %d", ErrRolledBack, j.cfg.Stream, last, info.State.FirstSeq, j.seq)
	}
	if last == j.seq {
		j.behind = false
		return 0, nil
	}
	tctx, cancel = context.WithTimeout(ctx, transientTry)
	cons, err := j.cfg.JS.OrderedConsumer(tctx, j.cfg.Stream, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:   j.seq + 1,
	})
	cancel()
	if err != nil {
		return 0, transient{fmt.Errorf("journal %s: %w", j.cfg.Stream, err)}
	}
	n := 0
	for j.seq < last {
		batch, err := cons.Fetch(int(min(last-j.seq, 256)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return n, transient{fmt.Errorf("journal %s: %w", j.cfg.Stream, err)}
		}
		got := 0
		for m := range batch.Messages() {
			got++
			md, err := m.Metadata()
			if err != nil {
				return n, transient{fmt.Errorf("journal %s: %w", j.cfg.Stream, err)}
			}
			seq := md.Sequence.Stream
			if seq != j.seq+1 {
				return n, fmt.Errorf("%w: %s: record %d follows %d", ErrCorrupt, j.cfg.Stream, seq, j.seq)
			}
			data := m.Data()
			if len(data) < 12+j.aead.Overhead() {
				return n, fmt.Errorf("%w: %s: record %d is truncated", ErrCorrupt, j.cfg.Stream, seq)
			}
			rec, err := j.aead.Open(nil, data[:12], data[12:], j.aad(seq, j.prev))
			if err != nil {
				return n, fmt.Errorf("%w: %s: record %d", ErrCorrupt, j.cfg.Stream, seq)
			}
			if err := j.cfg.Apply(seq, rec); err != nil {
				return n, fmt.Errorf("journal %s: applying record %d: %w", j.cfg.Stream, seq, err)
			}
			j.seq, j.prev = seq, sha256.Sum256(data)
			n++
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return n, transient{fmt.Errorf("journal %s: %w", j.cfg.Stream, err)}
		}
		if got == 0 {
			return n, transient{fmt.Errorf("journal %s: no record after %d although the stream ends at %d", j.cfg.Stream, j.seq, last)}
		}
	}
	j.behind = false
	return n, nil
}
