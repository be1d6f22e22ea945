package trigger

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cloister-faas/cloister/internal/bus/bustest"
	"github.com/cloister-faas/cloister/internal/wire"
)

// TestRunnerWatchesAgain: the runner survives a watch that cannot start
// and one that ends. Triggers whose records are unchanged keep running
// across watches; one deleted while no watch ran stops.
func TestRunnerWatchesAgain(t *testing.T) {
	nc := bustest.Connect(t)
	as := bustest.OpenAsync(t, nc)
	kv := bustest.NewFlakyWatches(as.Triggers)
	as.Triggers = kv
	r := NewRunner(RunnerConfig{Conn: nc, Async: as, Logger: slog.New(slog.DiscardHandler)})
	store := NewStore(as.JS, as.Triggers)
	put := func(name string) {
		// Once a year: nothing fires during the test.
		if err := store.PutTrigger(t.Context(), &wire.Trigger{Namespace: "default", Name: name, Cron: "0 0 1 1 *", Created: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	put("kept")
	put("dropped")

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		if n := r.runningCount(); n != 0 {
			t.Errorf("%d triggers still run after Run returned", n)
		}
	}()

	running := func(key string) func() uint64 {
		return func() uint64 {
			r.mu.Lock()
			defer r.mu.Unlock()
			return r.running[key].rev
		}
	}
	kept, dropped := running(TriggerKey("default", "kept")), running(TriggerKey("default", "dropped"))
	var w jetstream.KeyWatcher
	select {
	case w = <-kv.Watches: // the second watch: the first failed
	case err := <-done:
		t.Fatalf("Run returned (%v) when its first watch failed", err)
	case <-time.After(10 * time.Second):
		t.Fatal("no second watch within 10 s of the first failing")
	}
	bustest.Eventually(t, "both triggers to run", func() bool { return kept() != 0 && dropped() != 0 })
	rev := kept()

	// The watch ends; meanwhile one trigger is deleted. The next watch
	// never sees that delete.
	if err := w.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := as.Triggers.Delete(t.Context(), TriggerKey("default", "dropped")); err != nil {
		t.Fatal(err)
	}
	kv.NextWatch(t)
	bustest.Eventually(t, "the deleted trigger to stop", func() bool { return dropped() == 0 })
	if got := kept(); got != rev {
		t.Errorf("the unchanged trigger runs revision %d, want %d", got, rev)
	}
	put("added")
	bustest.Eventually(t, "a trigger added after the new watch began to run", func() bool { return running(TriggerKey("default", "added"))() != 0 })
}

// runningCount returns how many triggers run.
func (r *Runner) runningCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.running)
}
