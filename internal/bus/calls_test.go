package bus_test

import (
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/bus"
	"github.com/cloister-faas/cloister/internal/bus/bustest"
)

// TestServeCalls: a probe names a call and hears whether it is running,
// from its arrival until it has been answered; a probe that names nothing is answered all the same.
func TestServeCalls(t *testing.T) {
	nc := bustest.Connect(t)
	ctx := t.Context()
	release := make(chan struct{})
	started := make(chan string, 2)
	// One call at a time: the second waits for the first's turn.
	_, err := bus.ServeCalls(ctx, nc, "t.calls", "", 1, slog.Default(), func(_ context.Context, req []byte) ([]byte, error) {
		started <- string(req)
		<-release
		if string(req) == "bad" {
			return nil, apierr.New(apierr.BadRequest, "bad")
		}
		return append([]byte("done:"), req...), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	probe := func(id string) error {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		return bus.ProbeCall(pctx, nc, "t.calls", id)
	}
	if err := probe("nobody"); !errors.Is(err, bus.ErrCallIdle) {
		t.Fatalf("a call never sent: %v, want idle", err)
	}

	type result struct {
		out string
		err error
	}
	call := func(id, in string) chan result {
		ch := make(chan result, 1)
		go func() {
			out, err := bus.CallBytesNamed(ctx, nc, "t.calls", id, []byte(in))
			ch <- result{string(out), err}
		}()
		return ch
	}
	first := call("first", "a")
	if got := <-started; got != "a" {
		t.Fatalf("started %q", got)
	}
	if err := probe("first"); err != nil {
		t.Fatalf("probe of the running call: %v", err)
	}
	// The second waits for the first's slot.
	second := call("second", "bad")
	release <- struct{}{}
	if r := <-first; r.err != nil || r.out != "done:a" {
		t.Fatalf("first call: %q, %v", r.out, r.err)
	}
	if got := <-started; got != "bad" {
		t.Fatalf("started %q", got)
	}
	if err := probe("second"); err != nil {
		t.Fatalf("probe of the running second call: %v", err)
	}
	if err := probe("first"); !errors.Is(err, bus.ErrCallIdle) {
		t.Fatalf("probe of the answered call: %v, want idle", err)
	}
	release <- struct{}{}
	if r := <-second; apierr.CodeOf(r.err) != apierr.BadRequest {
		t.Fatalf("second call: %q, %v, want bad_request", r.out, r.err)
	}
	if err := probe("second"); !errors.Is(err, bus.ErrCallIdle) {
		t.Fatalf("probe of the call answered with an error: %v, want idle", err)
	}

	// A probe without a name (an older gateway's) gets an empty answer.
	m, err := nc.RequestWithContext(ctx, "t.calls", nil)
	if err != nil || len(m.Data) != 0 || m.Header.Get(bus.HeaderCallState) != "" {
		t.Fatalf("unnamed probe: %v %+v", err, m)
	}
	// Nobody there.
	if err := bus.ProbeCall(ctx, nc, "t.nobody", "x"); !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("probe of nobody: %v", err)
	}
}

// BenchmarkCallNaming: a request/reply round trip on the bus, plain
// (CallBytes to ServeBytes) against named (CallBytesNamed to ServeCalls,
// with the random id the gateway makes), to show what naming a call costs.
func BenchmarkCallNaming(b *testing.B) {
	nc := bustest.Connect(b)
	ctx := b.Context()
	echo := func(_ context.Context, req []byte) ([]byte, error) { return req, nil }
	if _, err := bus.ServeBytes(ctx, nc, "b.plain", "", 64, slog.Default(), echo); err != nil {
		b.Fatal(err)
	}
	if _, err := bus.ServeCalls(ctx, nc, "b.named", "", 64, slog.Default(), echo); err != nil {
		b.Fatal(err)
	}
	req := make([]byte, 256)
	b.Run("plain", func(b *testing.B) {
		for b.Loop() {
			if _, err := bus.CallBytes(ctx, nc, "b.plain", req); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("named", func(b *testing.B) {
		for b.Loop() {
			if _, err := bus.CallBytesNamed(ctx, nc, "b.named", rand.Text(), req); err != nil {
				b.Fatal(err)
			}
		}
	})
}
