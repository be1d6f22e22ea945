package bus_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"testing"

	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/bus"
	"github.com/cloister-faas/cloister/internal/bus/bustest"
)

func TestCallBytes(t *testing.T) {
	nc := bustest.Connect(t)
	ctx := t.Context()
	_, err := bus.ServeBytes(ctx, nc, "t.echo", "q", 2, slog.Default(), func(_ context.Context, req []byte) ([]byte, error) {
		switch string(req) {
		case "bad":
			return nil, apierr.New(apierr.BadRequest, "bad %s", "input")
		case "boom":
			return nil, errors.New("internal detail")
		}
		return append([]byte("echo:"), req...), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Binary bodies travel as they are.
	in := []byte{0, 1, 2, 0xff, '"'}
	out, err := bus.CallBytes(ctx, nc, "t.echo", in)
	if err != nil || !bytes.Equal(out, append([]byte("echo:"), in...)) {
		t.Fatalf("echo: %q, %v", out, err)
	}
	_, err = bus.CallBytes(ctx, nc, "t.echo", []byte("bad"))
	if apierr.CodeOf(err) != apierr.BadRequest || err.Error() != "bad_request: bad input" {
		t.Fatalf("API error: %v (%s)", err, apierr.CodeOf(err))
	}
	_, err = bus.CallBytes(ctx, nc, "t.echo", []byte("boom"))
	if apierr.CodeOf(err) != apierr.Internal {
		t.Fatalf("internal error: %v", err)
	}
	_, err = bus.CallBytes(ctx, nc, "t.nobody", nil)
	if apierr.CodeOf(err) != apierr.Unavailable {
		t.Fatalf("no responder: %v", err)
	}
}
