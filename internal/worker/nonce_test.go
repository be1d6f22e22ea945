package worker

import (
	"context"
	"errors"
	"log/slog"
	"testing"

	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/bus"
	"github.com/cloister-faas/cloister/internal/bus/bustest"
)

// lostAck is a replay log whose first Add records the id but loses the
// answer, as a write during a JetStream election can.
type lostAck struct {
	*bus.Replay
	lost bool
}

func (l *lostAck) Add(ctx context.Context, id string, token []byte) error {
	err := l.Replay.Add(ctx, id, token)
	if err == nil && !l.lost {
		l.lost = true
		return context.DeadlineExceeded
	}
	return err
}

// TestNonceLostAck: a nonce whose write landed but whose answer was lost is
// not taken for a replay when the worker writes it again; a real replay is.
func TestNonceLostAck(t *testing.T) {
	ctx := context.Background()
	st, err := bus.OpenStores(ctx, bustest.Connect(t), 1, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	b := &lostAck{Replay: st.Replay}
	if err := rememberNonce(ctx, b, "id-1"); err != nil {
		t.Fatalf("a nonce whose first answer was lost: %v", err)
	}
	if !b.lost {
		t.Fatal("the first answer was not lost")
	}
	if err := rememberNonce(ctx, b, "id-1"); apierr.CodeOf(err) != apierr.Replay {
		t.Fatalf("the same nonce again: %v, want replay", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	var ae *apierr.Error
	if err := rememberNonce(cctx, b, "id-2"); !errors.As(err, &ae) || ae.Code != apierr.Unavailable {
		t.Fatalf("with the log unreachable: %v, want unavailable", err)
	}
}
