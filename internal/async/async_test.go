package async

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/bus"
	"github.com/cloister-faas/cloister/internal/bus/bustest"
	"github.com/cloister-faas/cloister/internal/wire"
)

func open(t *testing.T) (*Store, *bus.AsyncStores) {
	t.Helper()
	nc := bustest.Connect(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	st, err := bus.OpenAsync(context.Background(), js, 1, bus.AsyncLimits{})
	if err != nil {
		t.Fatal(err)
	}
	return NewStore(st, nil), st
}

// TestCompletesOnce races many writers to complete one activation: exactly
// one succeeds, the others see ErrFinal, and the record keeps the winner.
func TestCompletesOnce(t *testing.T) {
	s, st := open(t)
	ctx := context.Background()
	acc, err := s.Submit(ctx, Submission{Request: wire.InvokeRequest{Namespace: "ns", Name: "f", Mode: wire.ModePlain, Plain: []byte("x")}, Kind: "function"})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins, finals := []string{}, 0
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			worker := string(rune('a' + i))
			_, err := s.Update(ctx, "ns", acc.ActivationID, func(a *wire.Activation) error {
				a.Status, a.Worker = wire.StatusSuccess, worker
				return nil
			})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				wins = append(wins, worker)
			case errors.Is(err, ErrFinal):
				finals++
			default:
				t.Errorf("update: %v", err)
			}
		}()
	}
	wg.Wait()
	if len(wins) != 1 || finals != 7 {
		t.Fatalf("%d writers completed the activation (%v), %d saw it final; want 1 and 7", len(wins), wins, finals)
	}
	a, _, err := s.Get(ctx, "ns", acc.ActivationID)
	if err != nil || a.Worker != wins[0] {
		t.Fatalf("record kept %q, winner %q (%v)", a.Worker, wins[0], err)
	}
	// The job was queued once, with the activation id as its message id.
	info, err := st.Queue.Info(ctx)
	if err != nil || info.State.Msgs != 1 {
		t.Fatalf("queue holds %d messages (%v)", info.State.Msgs, err)
	}
}

func TestIdempotentSubmit(t *testing.T) {
	s, st := open(t)
	ctx := context.Background()
	sub := Submission{Request: wire.InvokeRequest{Namespace: "ns", Name: "f", Mode: wire.ModePlain}, Kind: "function", IdempotencyKey: "k1"}
	a, err := s.Submit(ctx, sub)
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.Submit(ctx, sub)
	if err != nil || b.ActivationID != a.ActivationID || !b.Duplicate || a.Duplicate {
		t.Fatalf("resubmit: %+v %+v %v", a, b, err)
	}
	// The same key for another function is a conflict, not a duplicate.
	g := sub
	g.Request.Name = "g"
	if _, err := s.Submit(ctx, g); apierr.CodeOf(err) != apierr.IdempotencyConflict {
		t.Fatalf("same key, another function: %v", err)
	}
	g = sub
	g.Kind = "sequence"
	if _, err := s.Submit(ctx, g); apierr.CodeOf(err) != apierr.IdempotencyConflict {
		t.Fatalf("same key, a sequence of the same name: %v", err)
	}
	// Another namespace has its own keys.
	sub.Request.Namespace = "other"
	c, err := s.Submit(ctx, sub)
	if err != nil || c.ActivationID == a.ActivationID || c.Duplicate {
		t.Fatalf("other namespace: %+v %v", c, err)
	}
	info, _ := st.Queue.Info(ctx)
	if info.State.Msgs != 2 {
		t.Fatalf("queue holds %d messages, want 2", info.State.Msgs)
	}
	sub.IdempotencyKey = string(make([]byte, MaxIdempotencyKey+1))
	if _, err := s.Submit(ctx, sub); apierr.CodeOf(err) != apierr.BadRequest {
		t.Fatalf("long key: %v", err)
	}
}

func TestGetAndList(t *testing.T) {
	s, _ := open(t)
	ctx := context.Background()
	if _, _, err := s.Get(ctx, "ns", "zz"); apierr.CodeOf(err) != apierr.BadRequest {
		t.Fatalf("malformed id: %v", err)
	}
	if _, _, err := s.Get(ctx, "ns", NewID(time.Now())); apierr.CodeOf(err) != apierr.NotFound {
		t.Fatalf("unknown id: %v", err)
	}
	var ids []string
	for _, name := range []string{"f", "g", "f"} {
		acc, err := s.Submit(ctx, Submission{Request: wire.InvokeRequest{Namespace: "ns", Name: name, Mode: wire.ModePlain}})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, acc.ActivationID)
	}
	l, err := s.List(ctx, "ns", ListOptions{})
	if err != nil || len(l) != 3 || l[0].ActivationID != ids[2] || l[2].ActivationID != ids[0] {
		t.Fatalf("list is not newest first: %v", err)
	}
	l, _ = s.List(ctx, "ns", ListOptions{Name: "f", Limit: 1})
	if len(l) != 1 || l[0].ActivationID != ids[2] {
		t.Fatalf("filtered list: %+v", l)
	}
	l, _ = s.List(ctx, "ns", ListOptions{Name: "f", Skip: 1})
	if len(l) != 1 || l[0].ActivationID != ids[0] {
		t.Fatalf("skipped list: %+v", l)
	}
	l, _ = s.List(ctx, "ns", ListOptions{Skip: 1, Keep: func(a *wire.Activation) bool { return a.Name == "f" }})
	if len(l) != 1 || l[0].ActivationID != ids[0] {
		t.Fatalf("kept and skipped list: %+v", l)
	}
	if l, _ := s.List(ctx, "other", ListOptions{}); len(l) != 0 {
		t.Fatalf("another namespace sees %d activations", len(l))
	}
}

func TestDeadLetters(t *testing.T) {
	s, st := open(t)
	ctx := context.Background()
	if l, err := s.DeadLetters(ctx, "ns", time.Time{}, 0); err != nil || len(l) != 0 {
		t.Fatalf("no dead letters: %v %v", l, err)
	}
	var mid time.Time
	for i := range 7 {
		if i == 4 {
			time.Sleep(10 * time.Millisecond)
			mid = time.Now()
		}
		d := wire.DeadLetter{Activation: NewID(time.Now()), Namespace: "ns", Name: "f", Code: apierr.Replay,
			Reason: "r" + string(rune('0'+i)), Attempts: 1, Job: []byte(`{"big":"job"}`)}
		if err := s.DeadLetter(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.DeadLetter(ctx, wire.DeadLetter{Namespace: "other", Code: apierr.BadRequest, Reason: "x"}); err != nil {
		t.Fatal(err)
	}
	reasons := func(l []wire.DeadLetter) (out string) {
		for _, d := range l {
			out += d.Reason[1:]
			if d.Job != nil || d.Namespace != "ns" {
				t.Fatalf("listed with its job or from another namespace: %+v", d)
			}
		}
		return out
	}
	for _, c := range []struct {
		since time.Time
		limit int
		want  string
	}{
		{time.Time{}, 0, "6543210"},
		{time.Time{}, 3, "654"},
		{time.Time{}, 1, "6"},
		{mid, 0, "654"},
		{time.Now().Add(time.Hour), 0, ""},
	} {
		l, err := s.DeadLetters(ctx, "ns", c.since, c.limit)
		if err != nil || reasons(l) != c.want {
			t.Errorf("since %v, limit %d: got %q %v, want %q", c.since, c.limit, reasons(l), err, c.want)
		}
	}
	if l, err := s.DeadLetters(ctx, "nobody", time.Time{}, 0); err != nil || len(l) != 0 {
		t.Errorf("a namespace without dead letters: %v %v", l, err)
	}
	// Listing leaves no consumer behind on the stream.
	info, err := st.Dead.Info(ctx)
	if err != nil || info.State.Consumers != 0 {
		t.Errorf("consumers left on the dead-letter stream: %d %v", info.State.Consumers, err)
	}
}
