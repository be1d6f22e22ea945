package bus_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/cloister-faas/cloister/internal/bus"
)

// TestSupervise: a loop that returns before its context ends, with an
// error or without, is started again; one that returns after, is not.
func TestSupervise(t *testing.T) {
	log := slog.New(slog.NewTextHandler(t.Output(), nil))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runs := 0
	done := make(chan struct{})
	go func() {
		defer close(done)
		bus.Supervise(ctx, log, "the test loop", func(ctx context.Context) error {
			runs++
			switch runs {
			case 1:
				return errors.New("nats: no response from stream")
			case 2:
				return nil // a loop that ends on its own is started again too
			}
			cancel()
			<-ctx.Done()
			return nil
		})
	}()
	<-done
	if runs != 3 {
		t.Fatalf("run was called %d times, want 3: twice again after it returned before its context ended", runs)
	}
}

// TestSuperviseEnds: once the context has ended, a failing loop is not
// started again.
func TestSuperviseEnds(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	runs := 0
	bus.Supervise(ctx, slog.New(slog.DiscardHandler), "x", func(context.Context) error {
		runs++
		return errors.New("fails")
	})
	if runs != 1 {
		t.Errorf("run was called %d times after the context ended, want 1", runs)
	}
}

// TestSuperviseConnectionClosed: a loop whose NATS connection was closed
// (the process is shutting down) is not started again.
func TestSuperviseConnectionClosed(t *testing.T) {
	runs := 0
	bus.Supervise(context.Background(), slog.New(slog.DiscardHandler), "x", func(context.Context) error {
		runs++
		if runs > 3 {
			t.Fatal("started again after its connection was closed")
		}
		return fmt.Errorf("following the bucket: %w", nats.ErrConnectionClosed)
	})
	if runs != 1 {
		t.Errorf("run was called %d times, want 1", runs)
	}
}
