package gateway

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/bus"
	"github.com/cloister-faas/cloister/internal/bus/bustest"
	"github.com/cloister-faas/cloister/internal/wire"
)

// TestWorkerLostMidCall: a worker that leaves the bus while it runs a call
// ends the call with worker_lost within a couple of probe intervals, not
// at the call's timeout; so does a call whose request was lost on the way
// to a worker that is still there. A slow worker that is still there is
// waited for, whether it says that it runs the call or (an older worker)
// only that it is there.
func TestWorkerLostMidCall(t *testing.T) {
	nc := bustest.Connect(t)
	g := &Gateway{cfg: Config{Conn: nc}}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	var sub *nats.Subscription
	sub, err := nc.Subscribe(bus.WorkerSubject("dies"), func(m *nats.Msg) {
		if len(m.Data) == 0 {
			_ = m.Respond([]byte(`{}`))
			return
		}
		// The call arrives; the worker dies before it answers.
		go sub.Unsubscribe()
	})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	req := &wire.InvokeRequest{Namespace: "acme", Name: "f", Mode: wire.ModePlain, Plain: []byte("x")}
	_, err = g.callWorker(ctx, bus.WorkerSubject("dies"), req)
	if apierr.CodeOf(err) != apierr.WorkerLost {
		t.Fatalf("call on a worker that died: %v, want worker_lost", err)
	}
	if took := time.Since(start); took > 5*probeInterval {
		t.Errorf("worker_lost after %v", took)
	}

	slow, err := nc.Subscribe(bus.WorkerSubject("slow"), func(m *nats.Msg) {
		if len(m.Data) == 0 {
			_ = m.Respond([]byte(`{}`))
			return
		}
		var got wire.InvokeRequest
		if err := got.UnmarshalBinary(m.Data); err != nil || string(got.Plain) != "x" {
			t.Errorf("the worker got %q (%v), want the binary request", m.Data, err)
		}
		go func() {
			time.Sleep(3 * probeInterval)
			out, _ := (&wire.InvokeReply{Version: 2, Output: []byte("ok")}).AppendBinary(nil)
			_ = m.Respond(out)
		}()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Unsubscribe()
	rep, err := g.callWorker(ctx, bus.WorkerSubject("slow"), req)
	if err != nil || rep.Version != 2 || string(rep.Output) != "ok" {
		t.Fatalf("a slow worker that is still there: %v %+v", err, rep)
	}

	// A worker of today's kind (bus.ServeCalls), slow.
	if _, err := bus.ServeCalls(ctx, nc, bus.WorkerSubject("current"), "", 4, slog.Default(), func(context.Context, []byte) ([]byte, error) {
		time.Sleep(3 * probeInterval)
		return (&wire.InvokeReply{Version: 3, Output: []byte("ok")}).AppendBinary(nil)
	}); err != nil {
		t.Fatal(err)
	}
	rep, err = g.callWorker(ctx, bus.WorkerSubject("current"), req)
	if err != nil || rep.Version != 3 || string(rep.Output) != "ok" {
		t.Fatalf("a slow worker that runs the call: %v %+v", err, rep)
	}

	// The request is lost on the bus (a NATS node died with it): the
	// worker is there, but does not know the call.
	lost, err := nc.Subscribe(bus.WorkerSubject("lost"), func(m *nats.Msg) {
		if len(m.Data) > 0 {
			return // never arrived
		}
		r := nats.NewMsg(m.Reply)
		r.Header.Set(bus.HeaderCallState, bus.CallIdle)
		_ = m.RespondMsg(r)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer lost.Unsubscribe()
	start = time.Now()
	_, err = g.callWorker(ctx, bus.WorkerSubject("lost"), req)
	if apierr.CodeOf(err) != apierr.WorkerLost || !strings.Contains(err.Error(), "lost on the bus") {
		t.Fatalf("a call whose request was lost: %v, want worker_lost", err)
	}
	if took := time.Since(start); took > 5*probeInterval {
		t.Errorf("worker_lost after %v", took)
	}
}
