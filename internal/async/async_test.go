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
	st := bustest.OpenAsync(t, bustest.Connect(t))
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

// TestListWhileRecordsChange: a listing sees every activation even while
// records change under it, as running activations do. (The bucket's
// ListKeys stops after as many deliveries as there were keys, so a record
// rewritten during it hid another one: a console test saw one missing.)
func TestListWhileRecordsChange(t *testing.T) {
	s, _ := open(t)
	ctx := t.Context()
	const n = 40
	var ids []string
	for range n {
		acc, err := s.Submit(ctx, Submission{Request: wire.InvokeRequest{Namespace: "ns", Name: "f", Mode: wire.ModePlain}})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, acc.ActivationID)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 2 {
		wg.Go(func() {
			for i := w; ; i = (i + 2) % n {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := s.Update(ctx, "ns", ids[i], func(a *wire.Activation) error {
					a.Attempts++
					return nil
				}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	defer func() { close(stop); wg.Wait() }()
	for round := range 30 {
		l, err := s.List(ctx, "ns", ListOptions{Limit: MaxList})
		if err != nil {
			t.Fatal(err)
		}
		if len(l) != n {
			t.Fatalf("round %d: %d of %d activations listed while records change", round, len(l), n)
		}
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

// TestResumeInterruptedSubmit leaves the states that a gateway dying in
// the middle of Submit leaves (the idempotency key alone; the key and the
// record without a job) and resubmits with the same key, as the client
// that got no answer does: the earlier activation is answered and its job
// is queued, once, however many times it is resubmitted.
func TestResumeInterruptedSubmit(t *testing.T) {
	s, st := open(t)
	ctx := context.Background()
	sub := func(key string) Submission {
		return Submission{Request: wire.InvokeRequest{Namespace: "ns", Name: "f", Mode: wire.ModePlain, Plain: []byte(key)}, Kind: "function", IdempotencyKey: key}
	}
	jobs := func(id string) int {
		t.Helper()
		n := 0
		for seq := uint64(1); ; {
			m, err := st.Queue.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(bus.SubjectAsyncPrefix+"ns"))
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				return n
			}
			if err != nil {
				t.Fatal(err)
			}
			if m.Header.Get(jetstream.MsgIDHeader) == id {
				n++
			}
			seq = m.Sequence + 1
		}
	}
	for _, c := range []struct {
		name       string
		withRecord bool
	}{{"key only", false}, {"key and record", true}} {
		t.Run(c.name, func(t *testing.T) {
			key := "k-" + c.name
			id := NewID(time.Now())
			if _, err := st.Activations.Create(ctx, idemKey("ns", key), []byte(id)); err != nil {
				t.Fatal(err)
			}
			if c.withRecord {
				rec, _, err := newJob(id, time.Now(), sub(key))
				if err != nil {
					t.Fatal(err)
				}
				if _, err := st.Activations.Create(ctx, recordKey("ns", id), rec); err != nil {
					t.Fatal(err)
				}
			}
			if n := jobs(id); n != 0 {
				t.Fatalf("%d jobs before the resubmission", n)
			}
			for range 3 {
				acc, err := s.Submit(ctx, sub(key))
				if err != nil || acc.ActivationID != id || !acc.Duplicate {
					t.Fatalf("resubmission: %+v %v, want duplicate of %s", acc, err, id)
				}
				if n := jobs(id); n != 1 {
					t.Fatalf("%d jobs queued for the activation, want 1", n)
				}
			}
			if a, _, err := s.Get(ctx, "ns", id); err != nil || a.Status != wire.StatusQueued {
				t.Fatalf("record: %+v %v", a, err)
			}
		})
	}
	// A record that a worker took is not queued again.
	acc, err := s.Submit(ctx, sub("taken"))
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Queue.DeleteMsg(ctx, lastSeq(t, st)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Update(ctx, "ns", acc.ActivationID, func(a *wire.Activation) error { a.Status = wire.StatusRunning; return nil }); err != nil {
		t.Fatal(err)
	}
	if again, err := s.Submit(ctx, sub("taken")); err != nil || !again.Duplicate || jobs(acc.ActivationID) != 0 {
		t.Fatalf("resubmission of a running activation: %+v %v, %d jobs", again, err, jobs(acc.ActivationID))
	}
}

// TestResumeAtQuota: a namespace at its quota answers a resubmission with
// its activation if its job is queued, and with QuotaExceeded (try again)
// if the earlier submission never queued it.
func TestResumeAtQuota(t *testing.T) {
	nc := bustest.Connect(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	st, err := bus.OpenAsync(context.Background(), js, 1, bus.AsyncLimits{MaxQueuedPerNamespace: 1})
	if err != nil {
		t.Fatal(err)
	}
	s, ctx := NewStore(st, nil), context.Background()
	sub := func(key string) Submission {
		return Submission{Request: wire.InvokeRequest{Namespace: "ns", Name: "f", Mode: wire.ModePlain}, Kind: "function", IdempotencyKey: key}
	}
	first, err := s.Submit(ctx, sub("queued"))
	if err != nil {
		t.Fatal(err)
	}
	id := NewID(time.Now())
	rec, _, _ := newJob(id, time.Now(), sub("interrupted"))
	if _, err := st.Activations.Create(ctx, idemKey("ns", "interrupted"), []byte(id)); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Activations.Create(ctx, recordKey("ns", id), rec); err != nil {
		t.Fatal(err)
	}
	if acc, err := s.Submit(ctx, sub("queued")); err != nil || acc.ActivationID != first.ActivationID || !acc.Duplicate {
		t.Fatalf("resubmission of a queued job at the quota: %+v %v", acc, err)
	}
	if _, err := s.Submit(ctx, sub("interrupted")); apierr.CodeOf(err) != apierr.QuotaExceeded {
		t.Fatalf("resubmission of a job never queued, at the quota: %v, want %s", err, apierr.QuotaExceeded)
	}
	if err := st.Queue.DeleteMsg(ctx, lastSeq(t, st)); err != nil {
		t.Fatal(err)
	}
	if acc, err := s.Submit(ctx, sub("interrupted")); err != nil || acc.ActivationID != id || !acc.Duplicate {
		t.Fatalf("resubmission once there is room: %+v %v", acc, err)
	}
	if info, _ := st.Queue.Info(ctx); info.State.Msgs != 1 {
		t.Fatalf("queue holds %d jobs, want 1", info.State.Msgs)
	}
}

func lastSeq(t *testing.T, st *bus.AsyncStores) uint64 {
	t.Helper()
	info, err := st.Queue.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.LastSeq
}
