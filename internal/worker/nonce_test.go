package worker

import (
	"context"
	"errors"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/bus/bustest"
)

// lostAck is a bucket whose first Create stores the key but loses the
// answer, as a write during a JetStream election can.
type lostAck struct {
	jetstream.KeyValue
	lost bool
}

func (l *lostAck) Create(ctx context.Context, key string, value []byte, opts ...jetstream.KVCreateOpt) (uint64, error) {
	rev, err := l.KeyValue.Create(ctx, key, value, opts...)
	if err == nil && !l.lost {
		l.lost = true
		return 0, context.DeadlineExceeded
	}
	return rev, err
}

// TestNonceLostAck: a nonce whose write landed but whose answer was lost is
// not taken for a replay when the worker writes it again; a real replay is.
func TestNonceLostAck(t *testing.T) {
	ctx := context.Background()
	js, err := jetstream.New(bustest.Connect(t))
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "nonces"})
	if err != nil {
		t.Fatal(err)
	}
	b := &lostAck{KeyValue: kv}
	if err := rememberNonce(ctx, b, "n.1"); err != nil {
		t.Fatalf("a nonce whose first answer was lost: %v", err)
	}
	if !b.lost {
		t.Fatal("the first answer was not lost")
	}
	if err := rememberNonce(ctx, b, "n.1"); apierr.CodeOf(err) != apierr.Replay {
		t.Fatalf("the same nonce again: %v, want replay", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	var ae *apierr.Error
	if err := rememberNonce(cctx, b, "n.2"); !errors.As(err, &ae) || ae.Code != apierr.Unavailable {
		t.Fatalf("with the bucket unreachable: %v, want unavailable", err)
	}
}
