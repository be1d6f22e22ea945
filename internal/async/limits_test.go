package async

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/bus"
	"github.com/cloister-faas/cloister/internal/wire"
)

// gateways starts one NATS server and returns n Stores over it, each on
// its own connection and with its own process-local state, as n gateways
// in separate processes would be.
func gateways(t testing.TB, n int, lim bus.AsyncLimits) []*Store {
	t.Helper()
	srv, err := bus.StartServer(bus.ServerOptions{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	var out []*Store
	for i := range n {
		nc, err := srv.Connect(fmt.Sprintf("gateway-%d", i))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		st, err := bus.OpenAsync(context.Background(), js, 1, lim)
		if err != nil {
			t.Fatal(err)
		}
		s := NewStore(st, nil)
		s.local = new(queueLocal)
		out = append(out, s)
	}
	return out
}

func plain(ns string) Submission {
	return Submission{Request: wire.InvokeRequest{Namespace: ns, Name: "f", Mode: wire.ModePlain, Plain: []byte("x")}, Kind: "function"}
}

func queued(t testing.TB, s *Store, ns string) uint64 {
	t.Helper()
	subj := bus.SubjectAsyncPrefix + ns
	info, err := s.st.Queue.Info(context.Background(), jetstream.WithSubjectFilter(subj))
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Subjects[subj]
}

// TestQueueQuotaIsExactAcrossGateways has a hostile tenant submit from
// many goroutines through four gateways at once: exactly the quota is
// accepted, every other submission is refused with quota_exceeded before
// it is acknowledged, and another namespace is not affected. Finishing a
// job frees one place.
func TestQueueQuotaIsExactAcrossGateways(t *testing.T) {
	const quota = 10
	gws := gateways(t, 4, bus.AsyncLimits{MaxQueuedPerNamespace: quota})
	ctx := context.Background()
	var mu sync.Mutex
	accepted, refused := map[string]bool{}, 0
	var wg sync.WaitGroup
	for i := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			acc, err := gws[i%len(gws)].Submit(ctx, plain("hostile"))
			mu.Lock()
			defer mu.Unlock()
			switch apierr.CodeOf(err) {
			case "":
				accepted[acc.ActivationID] = true
			case apierr.QuotaExceeded:
				refused++
			default:
				t.Errorf("submission: %v", err)
			}
		}()
	}
	wg.Wait()
	if len(accepted) != quota || refused != 64-quota {
		t.Fatalf("accepted %d, refused %d; want %d and %d", len(accepted), refused, quota, 64-quota)
	}
	if n := queued(t, gws[0], "hostile"); n != quota {
		t.Fatalf("the namespace has %d jobs queued, want %d", n, quota)
	}
	// Every accepted activation has its record and its job; no refused
	// one left a record.
	l, err := gws[1].List(ctx, "hostile", ListOptions{Limit: MaxList})
	if err != nil || len(l) != quota {
		t.Fatalf("records: %d (%v), want %d", len(l), err, quota)
	}
	for _, a := range l {
		if !accepted[a.ActivationID] || a.Status != wire.StatusQueued {
			t.Fatalf("record %s (%s) was not accepted", a.ActivationID, a.Status)
		}
	}
	_, err = gws[2].Submit(ctx, plain("hostile"))
	if ae := apierr.From(err); ae.Code != apierr.QuotaExceeded || ae.Code.Status() != 429 {
		t.Fatalf("over the quota: %v", err)
	}
	if _, err := gws[3].Submit(ctx, plain("calm")); err != nil {
		t.Fatalf("another namespace: %v", err)
	}
	// A worker finishes one job: one more fits, and only one.
	cons, err := gws[0].st.JS.CreateOrUpdateConsumer(ctx, bus.StreamAsync, jetstream.ConsumerConfig{
		Durable: bus.AsyncConsumerName(bus.SubjectAsyncPrefix + "hostile"), FilterSubject: bus.SubjectAsyncPrefix + "hostile", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	m, err := cons.Next()
	if err != nil {
		t.Fatal(err)
	}
	if err := m.DoubleAck(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := gws[1].Submit(ctx, plain("hostile")); err != nil {
		t.Fatalf("after one job finished: %v", err)
	}
	if _, err := gws[2].Submit(ctx, plain("hostile")); apierr.CodeOf(err) != apierr.QuotaExceeded {
		t.Fatalf("full again: %v", err)
	}
}

// TestQueueQuotaKeepsIdempotency resubmits with an idempotency key while
// the namespace is at its quota: the caller gets its activation back.
func TestQueueQuotaKeepsIdempotency(t *testing.T) {
	s := gateways(t, 1, bus.AsyncLimits{MaxQueuedPerNamespace: 1})[0]
	ctx := context.Background()
	sub := plain("ns")
	sub.IdempotencyKey = "order-1"
	a, err := s.Submit(ctx, sub)
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.Submit(ctx, sub)
	if err != nil || b.ActivationID != a.ActivationID || !b.Duplicate {
		t.Fatalf("resubmission at the quota: %+v %v", b, err)
	}
	sub.IdempotencyKey = "order-2"
	if _, err := s.Submit(ctx, sub); apierr.CodeOf(err) != apierr.QuotaExceeded {
		t.Fatalf("a new key at the quota: %v", err)
	}
	// The refused key was not claimed.
	if _, err := s.earlier(ctx, "ns", sub); err != errNoEarlier {
		t.Fatalf("the refused submission claimed its key: %v", err)
	}
}

// TestFullQueueRefusesAndKeeps fills the whole stream: the next
// submission, of any namespace, is overloaded (503), and every queued job
// stays.
func TestFullQueueRefusesAndKeeps(t *testing.T) {
	s := gateways(t, 1, bus.AsyncLimits{MaxQueueJobs: 3})[0]
	ctx := context.Background()
	for _, ns := range []string{"a", "b", "a"} {
		if _, err := s.Submit(ctx, plain(ns)); err != nil {
			t.Fatal(err)
		}
	}
	_, err := s.Submit(ctx, plain("c"))
	if ae := apierr.From(err); ae.Code != apierr.Overloaded || ae.Code.Status() != 503 {
		t.Fatalf("full queue: %v", err)
	}
	if l, _ := s.List(ctx, "c", ListOptions{}); len(l) != 0 {
		t.Fatalf("the refused submission left a record: %+v", l)
	}
	info, err := s.st.Queue.Info(ctx)
	if err != nil || info.State.Msgs != 3 {
		t.Fatalf("queue holds %d jobs (%v), want 3", info.State.Msgs, err)
	}
}

// TestLimitsNeverDropQueuedJobs queues jobs under the settings of an
// earlier version (no limits), then reopens the stores with limits below
// what is queued, as an upgrade would: nothing queued is lost, and new
// submissions are refused until the queue drains.
func TestLimitsNeverDropQueuedJobs(t *testing.T) {
	srv, err := bus.StartServer(bus.ServerOptions{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	nc, err := srv.Connect("test")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	// The stream as earlier versions made it.
	if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: bus.StreamAsync, Subjects: []string{bus.SubjectAsyncPrefix + ">"}, Retention: jetstream.WorkQueuePolicy,
		Storage: jetstream.FileStorage, Duplicates: bus.AsyncDedupWindow, MaxMsgSize: bus.MaxPayload,
	}); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		if _, err := js.Publish(ctx, bus.SubjectAsyncPrefix+"ns", []byte("{}")); err != nil {
			t.Fatal(err)
		}
	}
	st, err := bus.OpenAsync(ctx, js, 1, bus.AsyncLimits{MaxQueuedPerNamespace: 2, MaxQueueJobs: 4})
	if err != nil {
		t.Fatal(err)
	}
	s := NewStore(st, nil)
	if n := queued(t, s, "ns"); n != 5 {
		t.Fatalf("after the upgrade %d jobs are queued, want 5", n)
	}
	if _, err := s.Submit(ctx, plain("ns")); apierr.CodeOf(err) != apierr.QuotaExceeded {
		t.Fatalf("over the namespace quota: %v", err)
	}
	if _, err := s.Submit(ctx, plain("other")); apierr.CodeOf(err) != apierr.Overloaded {
		t.Fatalf("over the stream limit: %v", err)
	}
	if n := queued(t, s, "ns"); n != 5 {
		t.Fatalf("%d jobs are queued, want 5", n)
	}
	if _, err := bus.OpenAsync(ctx, js, 1, bus.AsyncLimits{MaxQueueBytes: 1 << 20}); err == nil {
		t.Fatal("a byte limit below one message was accepted")
	}
}

// TestActivationRecordsExpire checks the records bucket's TTL: the
// default, and a short one under which a record goes away.
func TestActivationRecordsExpire(t *testing.T) {
	_, st := open(t)
	ctx := context.Background()
	status, err := st.Activations.Status(ctx)
	if err != nil || status.TTL() != bus.DefaultActivationTTL {
		t.Fatalf("default TTL %v (%v), want %v", status.TTL(), err, bus.DefaultActivationTTL)
	}
	s := gateways(t, 1, bus.AsyncLimits{ActivationTTL: time.Second})[0]
	acc, err := s.Submit(ctx, plain("ns"))
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, _, err := s.Get(ctx, "ns", acc.ActivationID)
		if apierr.CodeOf(err) == apierr.NotFound {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the record outlived its TTL: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// BenchmarkSubmit measures a submission with and without the
// per-namespace quota (which adds a count and a compare-and-set publish).
func BenchmarkSubmit(b *testing.B) {
	for _, c := range []struct {
		name  string
		quota int
	}{{"no-quota", -1}, {"quota", 1 << 30}} {
		b.Run(c.name, func(b *testing.B) {
			s := gateways(b, 1, bus.AsyncLimits{MaxQueuedPerNamespace: c.quota})[0]
			ctx := context.Background()
			for b.Loop() {
				if _, err := s.Submit(ctx, plain("ns")); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
