package bus

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"testing"

	"github.com/cloister-faas/cloister/internal/apierr"
)

func TestCallBytes(t *testing.T) {
	srv, err := StartServer(ServerOptions{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	nc, err := srv.Connect("test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	ctx := t.Context()
	_, err = ServeBytes(ctx, nc, "t.echo", "q", 2, slog.Default(), func(_ context.Context, req []byte) ([]byte, error) {
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
	out, err := CallBytes(ctx, nc, "t.echo", in)
	if err != nil || !bytes.Equal(out, append([]byte("echo:"), in...)) {
		t.Fatalf("echo: %q, %v", out, err)
	}
	_, err = CallBytes(ctx, nc, "t.echo", []byte("bad"))
	if apierr.CodeOf(err) != apierr.BadRequest || err.Error() != "bad_request: bad input" {
		t.Fatalf("API error: %v (%s)", err, apierr.CodeOf(err))
	}
	_, err = CallBytes(ctx, nc, "t.echo", []byte("boom"))
	if apierr.CodeOf(err) != apierr.Internal {
		t.Fatalf("internal error: %v", err)
	}
	_, err = CallBytes(ctx, nc, "t.nobody", nil)
	if apierr.CodeOf(err) != apierr.Unavailable {
		t.Fatalf("no responder: %v", err)
	}
}
