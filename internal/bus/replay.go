package bus

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The replay log (ADR 0026): every sealed request's nonce is one message on
// SubjectReplay, and JetStream's duplicate window, as long as ReplayWindow,
// refuses a second message with the same id. All nonces share one subject,
// so the server keeps no per-subject state for them.
const (
	StreamReplay  = "CLOISTER_REPLAY"
	SubjectReplay = "cloister.replay"
)

// BucketReplay is the key-value bucket that held nonces, a key each,
// before the replay log. A node copies what is left in it into the log
// when it opens its stores (migrateReplay); nothing writes it any more.
const BucketReplay = "cloister_replay"

// ErrReplayed is what Replay.Add returns for an id that another write
// recorded first.
var ErrReplayed = errors.New("id already recorded")

// errRecording is what Replay.Add returns while a first write of the same
// id is still being replicated: the caller tries again, and then learns
// whether that write was its own.
var errRecording = errors.New("an earlier write of this id is not yet committed")

// replayTokenMax bounds a recorded token (a worker's is 16 bytes), and
// replayMsgMax a recorded message: its headers, the id and the expected
// stream, count too.
const (
	replayTokenMax = 64
	replayMsgMax   = 512
)

// Replay is the replay log.
type Replay struct {
	js  jetstream.JetStream
	str jetstream.Stream
}

// ReplayID is the id a request is recorded under: the first 16 bytes of
// its digest (a SHA-256 over what identifies it), base64url-encoded.
func ReplayID(digest []byte) string {
	return base64.RawURLEncoding.EncodeToString(digest[:16])
}

// Add records id with token, a random value of the caller's. It returns
// nil if this write recorded id, or if an earlier write with the same
// token did (its answer was lost and the caller tried again), and
// ErrReplayed if a write with another token did.
func (r *Replay) Add(ctx context.Context, id string, token []byte) error {
	if len(token) == 0 || len(token) > replayTokenMax {
		return fmt.Errorf("a replay token must be 1 to %d bytes", replayTokenMax)
	}
	m := &nats.Msg{Subject: SubjectReplay, Header: nats.Header{jetstream.MsgIDHeader: {id}}, Data: token}
	ack, err := r.js.PublishMsg(ctx, m, jetstream.WithExpectStream(StreamReplay))
	if err != nil {
		return err
	}
	if !ack.Duplicate {
		return nil
	}
	if ack.Sequence == 0 {
		return errRecording
	}
	got, err := r.str.GetMsg(ctx, ack.Sequence)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return ErrReplayed // recorded, and aged out since
	}
	if err != nil {
		return err
	}
	if bytes.Equal(got.Data, token) {
		return nil
	}
	return ErrReplayed
}

// openReplay creates or opens the replay log's stream.
func openReplay(ctx context.Context, js jetstream.JetStream, replicas int) (*Replay, error) {
	var str jetstream.Stream
	err := RetryTransient(ctx, func(ctx context.Context) (err error) {
		str, err = js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
			Name:        StreamReplay,
			Description: "request nonces, deduplicated by message id (ADR 0026)",
			Subjects:    []string{SubjectReplay},
			Storage:     jetstream.FileStorage,
			Replicas:    replicas,
			MaxAge:      ReplayWindow,
			Duplicates:  ReplayWindow,
			MaxMsgSize:  replayMsgMax,
			Discard:     jetstream.DiscardOld,
			AllowDirect: true,
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("opening stream %s: %w", StreamReplay, err)
	}
	return &Replay{js: js, str: str}, nil
}

// migrateReplay copies the nonces still in the bucket the replay log
// replaced, so that a request recorded there before an upgrade is still
// refused after it. Each nonce gets the id Add gives it (its key is the
// hex of the same digest) and lives a whole window from now. Copying
// twice changes nothing (the ids are deduplicated), so every role may do
// it as it starts. The bucket's keys expire by its TTL; no role may delete
// the stream, so it stays, empty.
func migrateReplay(ctx context.Context, js jetstream.JetStream, log *slog.Logger) error {
	str, err := js.Stream(ctx, "KV_"+BucketReplay)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	prefix := "$KV." + BucketReplay + ".n."
	info, err := str.Info(ctx, jetstream.WithSubjectFilter(prefix+"*"))
	if err != nil || len(info.State.Subjects) == 0 {
		return err
	}
	var (
		pending []jetstream.PubAckFuture
		copied  int
	)
	wait := func() error {
		for _, f := range pending {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				return err
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		pending = pending[:0]
		return nil
	}
	for subj := range info.State.Subjects {
		d, err := hex.DecodeString(strings.TrimPrefix(subj, prefix))
		if err != nil || len(d) < 16 {
			continue
		}
		m := &nats.Msg{Subject: SubjectReplay, Header: nats.Header{jetstream.MsgIDHeader: {ReplayID(d)}}, Data: []byte("copied")}
		f, err := js.PublishMsgAsync(m, jetstream.WithExpectStream(StreamReplay))
		if err != nil {
			return err
		}
		copied++
		if pending = append(pending, f); len(pending) == 1024 {
			if err := wait(); err != nil {
				return err
			}
		}
	}
	if err := wait(); err != nil {
		return err
	}
	log.Info("copied the nonces of the replay bucket into the replay log", "bucket", BucketReplay, "stream", StreamReplay, "nonces", copied)
	return nil
}
