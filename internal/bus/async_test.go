package bus_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cloister-faas/cloister/internal/bus"
	"github.com/cloister-faas/cloister/internal/bus/bustest"
)

// TestBindAsync: a worker binding to the async stores leaves the limits
// the gateway set (before, it set them back to the defaults each time it
// started), and creates the stores with the defaults if none exist yet.
func TestBindAsync(t *testing.T) {
	ctx := context.Background()
	js, err := jetstream.New(bustest.Connect(t))
	if err != nil {
		t.Fatal(err)
	}
	// A worker first, on an empty server: the defaults.
	w, err := bus.BindAsync(ctx, js, 1)
	if err != nil {
		t.Fatal(err)
	}
	if w.Limits.ActivationTTL != bus.DefaultActivationTTL || w.Limits.MaxQueueJobs != bus.DefaultMaxQueueJobs {
		t.Fatalf("created with %+v, want the defaults", w.Limits)
	}
	// The gateway applies its flags, then a worker starts again.
	lim := bus.AsyncLimits{ActivationTTL: time.Hour, MaxQueueJobs: 500, MaxQueueBytes: 64 << 20}
	if _, err := bus.OpenAsync(ctx, js, 1, lim); err != nil {
		t.Fatal(err)
	}
	w, err = bus.BindAsync(ctx, js, 1)
	if err != nil {
		t.Fatal(err)
	}
	st, err := w.Activations.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	info, err := w.Queue.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.TTL() != time.Hour || info.Config.MaxMsgs != 500 || info.Config.MaxBytes != 64<<20 {
		t.Fatalf("after a worker bound: TTL %v, jobs %d, bytes %d; want the gateway's 1h, 500, 64 MiB", st.TTL(), info.Config.MaxMsgs, info.Config.MaxBytes)
	}
	if w.Limits.ActivationTTL != time.Hour || w.Limits.MaxQueueJobs != 500 || w.Limits.MaxQueueBytes != 64<<20 {
		t.Fatalf("the bound stores report %+v", w.Limits)
	}
}
