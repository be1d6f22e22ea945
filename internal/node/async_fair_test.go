package node_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cloister-faas/cloister/client"
	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/bundle"
	"github.com/cloister-faas/cloister/internal/bus"
	"github.com/cloister-faas/cloister/internal/node"
	"github.com/cloister-faas/cloister/internal/wire"
	"github.com/cloister-faas/cloister/internal/worker"
)

// napModule returns a command that sleeps d on the clock, using no CPU,
// and exits with no output. It needs the clock capability. It is
//
//	(module
//	  (import "wasi_snapshot_preview1" "poll_oneoff"
//	    (func $poll (param i32 i32 i32 i32) (result i32)))
//	  (memory (export "memory") 1)
//	  (func (export "_start")
//	    ;; one subscription at 0: tag 0 (clock) at 8, clock id 1
//	    ;; (monotonic) at 16, relative timeout d at 24; the event at 64,
//	    ;; the event count at 96
//	    (i32.store (i32.const 16) (i32.const 1))
//	    (i64.store (i32.const 24) (i64.const <d in ns>))
//	    (drop (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 96)))))
//
// assembled here so that the test can choose d.
func napModule(d time.Duration) []byte {
	sleb := func(v int64) (b []byte) {
		for {
			c := byte(v & 0x7f)
			v >>= 7
			if (v == 0 && c&0x40 == 0) || (v == -1 && c&0x40 != 0) {
				return append(b, c)
			}
			b = append(b, c|0x80)
		}
	}
	name := func(s string) []byte { return append([]byte{byte(len(s))}, s...) }
	section := func(id byte, parts ...[]byte) []byte {
		body := bytes.Join(parts, nil)
		return append([]byte{id, byte(len(body))}, body...) // every section is under 128 bytes
	}
	code := bytes.Join([][]byte{
		{0x00},                                  // no locals
		{0x41, 16, 0x41, 1, 0x36, 2, 0},         // i32.store (16) 1
		{0x41, 24, 0x42}, sleb(d.Nanoseconds()), // i64.const d
		{0x37, 3, 0}, // i64.store (24)
		{0x41, 0, 0x41, 0xc0, 0x00, 0x41, 1, 0x41, 0xe0, 0x00, 0x10, 0, 0x1a}, // call $poll; drop
		{0x0b}, // end
	}, nil)
	return bytes.Join([][]byte{
		{0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00},
		section(1, []byte{2, 0x60, 4, 0x7f, 0x7f, 0x7f, 0x7f, 1, 0x7f, 0x60, 0, 0}),
		section(2, []byte{1}, name("wasi_snapshot_preview1"), name("poll_oneoff"), []byte{0, 0}),
		section(3, []byte{1, 1}),
		section(5, []byte{1, 0, 1}),
		section(7, []byte{2}, name("memory"), []byte{2, 0}, name("_start"), []byte{0, 1}),
		section(10, []byte{1, byte(len(code))}, code),
	}, nil)
}

// TestAsyncQueueIsSharedFairly plays a hostile tenant against the async
// queue. Namespace team-a queues slow jobs until its depth quota refuses
// one with quota_exceeded (429) before acknowledging it; namespace team-b
// is still accepted, and its trivial job runs as soon as a slot frees,
// not after team-a's backlog. Every acknowledged activation then reaches
// a final status, and the queue is empty.
func TestAsyncQueueIsSharedFairly(t *testing.T) {
	const quota = 64
	var mu sync.Mutex
	var order []string // activation ids, in the order their attempts started
	gate := make(chan struct{})
	e := start(t, func(o *node.Options) {
		o.AsyncLimits = bus.AsyncLimits{MaxQueuedPerNamespace: quota}
		o.Async = func(_ int, c *worker.AsyncConfig) {
			c.Concurrency = 2
			c.Started = func(id string, _ int) {
				mu.Lock()
				order = append(order, id)
				mu.Unlock()
				<-gate // held until both tenants have queued
			}
		}
	})
	var opened sync.Once
	open := func() { opened.Do(func() { close(gate) }) }
	t.Cleanup(open) // before the node stops, whatever happened
	ctx := context.Background()
	a, b := e.tenant("team-a"), e.tenant("team-b")
	tokA, err := e.c.CreateToken(ctx, "team-a", "raw") // for requests by hand
	if err != nil {
		t.Fatal(err)
	}
	a.deploy("nap", napModule(50*time.Millisecond), func(m *bundle.Manifest) { m.Capabilities.Clock = true })
	b.deploy("echo", fixture(t, "echo.wasm"), nil)

	// (1) team-a fills its quota; the next one is refused, and nothing of
	// it is queued or recorded.
	var backlog []*client.Pending
	for range quota {
		p, err := a.c.InvokeAsync(ctx, "nap", nil, client.AsyncOptions{})
		if err != nil {
			t.Fatalf("team-a's job %d: %v", len(backlog)+1, err)
		}
		backlog = append(backlog, p)
	}
	// The gateway refuses before it would queue: the sealed body is never
	// opened, so an empty one will do.
	status, eb := a.post("/v1/functions/nap/invoke?async=true", wire.SealedContentType, tokA, mustJSON(wire.SealedRequest{Mode: wire.ModeHPKE}))
	if status != 429 || eb.Code != apierr.QuotaExceeded {
		t.Fatalf("team-a past its quota: got %d %s (%s), want 429 quota_exceeded", status, eb.Code, eb.Message)
	}
	// And through the SDK, as a *client.Error with the code.
	var ce *client.Error
	if _, err := a.c.InvokeAsync(ctx, "nap", nil, client.AsyncOptions{}); !errors.As(err, &ce) || ce.Code != string(apierr.QuotaExceeded) {
		t.Fatalf("team-a past its quota through the SDK: got %v, want a *client.Error quota_exceeded", err)
	}
	if l, err := a.c.Activations(ctx, 200, ""); err != nil || len(l) != quota {
		t.Fatalf("team-a has %d activations (%v), want %d", len(l), err, quota)
	}
	// team-b is not affected.
	secret := randomMarker()
	pb, err := b.c.InvokeAsync(ctx, "echo", secret, client.AsyncOptions{})
	if err != nil {
		t.Fatalf("team-b while team-a is full: %v", err)
	}
	open()

	// (2) team-b's job does not wait for team-a's backlog.
	res, err := wait(t, b.c, pb)
	if err != nil || !bytes.Equal(res.Output, secret) {
		t.Fatalf("team-b's job: %v", err)
	}
	// (3) Every acknowledged job reaches a final status.
	for i, p := range backlog {
		if _, err := wait(t, a.c, p); err != nil {
			t.Fatalf("team-a's job %d: %v", i+1, err)
		}
	}
	mu.Lock()
	pos := slices.Index(order, pb.ActivationID)
	mu.Unlock()
	ends := make([]int64, 0, quota)
	for _, p := range backlog {
		r, err := a.c.Activation(ctx, p.ActivationID)
		if err != nil || r.Status != wire.StatusSuccess {
			t.Fatalf("team-a's activation %s: %v %+v", p.ActivationID, err, r)
		}
		ends = append(ends, r.End)
	}
	rb, err := b.c.Activation(ctx, pb.ActivationID)
	if err != nil {
		t.Fatal(err)
	}
	before := 0
	for _, end := range ends {
		if end < rb.End {
			before++
		}
	}
	t.Logf("team-b's job started %d of %d and finished after %d of team-a's %d jobs", pos+1, len(order), before, quota)
	// Round robin starts it third (two slots were held by team-a); a
	// FIFO would start it last, after all of team-a's.
	if pos < 0 || pos > 4 || before > quota/4 {
		t.Fatalf("team-b's job started %d and finished after %d of team-a's %d jobs; want among the first 5, and after at most %d", pos+1, before, quota, quota/4)
	}
	info := asyncQueue(t, e.n)
	if info.State.Msgs != 0 {
		t.Fatalf("%d jobs are left in the queue", info.State.Msgs)
	}
	// The quota is free again.
	if _, err := a.c.InvokeAsync(ctx, "nap", nil, client.AsyncOptions{}); err != nil {
		t.Fatalf("team-a after its backlog drained: %v", err)
	}
}

// asyncQueue reads the jobs stream's state.
func asyncQueue(t *testing.T, n *node.Node) *jetstream.StreamInfo {
	t.Helper()
	nc, err := n.Bus().Connect("queue-observer")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(context.Background(), bus.StreamAsync)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info
}

// TestAsyncUpgradeKeepsQueuedJobs restarts a node whose queue was left
// by an earlier version: its single consumer holds one job delivered and
// not acknowledged, two more wait, and the new limits are below what is
// queued. The restarted node runs all three.
func TestAsyncUpgradeKeepsQueuedJobs(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	n1, err := node.Start(ctx, node.Options{Dir: dir, Addr: "127.0.0.1:0", Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	_, owner, _ := ed25519.GenerateKey(rand.Reader)
	c1, err := client.New(n1.URL, n1.Token, clientPolicy(n1.Policy), client.WithCallerKey(owner))
	if err != nil {
		n1.Close()
		t.Fatal(err)
	}
	e1 := &env{t: t, n: n1, c: c1, owner: owner, http: &recorder{}, bus: &recorder{}, dir: dir}
	e1.deploy("echo", fixture(t, "echo.wasm"), nil)
	n1.StopWorker(n1.WorkerID(0)) // the old worker is gone...

	// ...and its consumer is the one of earlier versions.
	nc, err := n1.Bus().Connect("old-worker")
	if err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	old, err := js.CreateOrUpdateConsumer(ctx, bus.StreamAsync, jetstream.ConsumerConfig{
		Durable: bus.ConsumerAsync, AckPolicy: jetstream.AckExplicitPolicy, AckWait: 30 * time.Second,
		MaxDeliver: 4, MaxAckPending: -1, FilterSubject: bus.SubjectAsyncPrefix + ">",
	})
	if err != nil {
		t.Fatal(err)
	}
	var pending []*client.Pending
	var inputs [][]byte
	for range 3 {
		in := randomMarker()
		p, err := c1.InvokeAsync(ctx, "echo", in, client.AsyncOptions{})
		if err != nil {
			t.Fatal(err)
		}
		pending, inputs = append(pending, p), append(inputs, in)
	}
	if m, err := old.Next(jetstream.FetchMaxWait(5 * time.Second)); err != nil {
		t.Fatal(err)
	} else if md, _ := m.Metadata(); md.NumDelivered != 1 {
		t.Fatalf("delivered %d times", md.NumDelivered)
	} // held, never acknowledged
	nc.Close()
	if err := n1.Close(); err != nil {
		t.Fatal(err)
	}

	n2, err := node.Start(ctx, node.Options{Dir: dir, Addr: "127.0.0.1:0", Logger: logger,
		AsyncLimits: bus.AsyncLimits{MaxQueuedPerNamespace: 1, MaxQueueJobs: 2}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n2.Close() })
	c2, err := client.New(n2.URL, n2.Token, clientPolicy(n2.Policy), client.WithCallerKey(owner))
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range pending {
		res, err := wait(t, c2, p)
		if err != nil || !bytes.Equal(res.Output, inputs[i]) {
			t.Fatalf("job %d after the upgrade: %v", i+1, err)
		}
	}
	info := asyncQueue(t, n2)
	if info.State.Msgs != 0 {
		t.Fatalf("%d jobs left in the queue", info.State.Msgs)
	}
	nc2, err := n2.Bus().Connect("observer")
	if err != nil {
		t.Fatal(err)
	}
	defer nc2.Close()
	js2, _ := jetstream.New(nc2)
	if _, err := js2.Consumer(ctx, bus.StreamAsync, bus.ConsumerAsync); !errors.Is(err, jetstream.ErrConsumerNotFound) {
		t.Fatalf("the earlier consumer is still there: %v", err)
	}
}

// TestAsyncNamespaceKeepsToItsShare: a worker runs at most
// NamespaceConcurrency jobs of one namespace, even with slots free and a
// backlog queued, so that another namespace's job starts at once while
// the first namespace's jobs hold theirs.
func TestAsyncNamespaceKeepsToItsShare(t *testing.T) {
	var mu sync.Mutex
	var order []string // activation ids, in the order their attempts started
	gate := make(chan struct{})
	e := start(t, func(o *node.Options) {
		o.Async = func(_ int, c *worker.AsyncConfig) {
			c.Concurrency, c.NamespaceConcurrency = 4, 2
			c.Started = func(id string, _ int) {
				mu.Lock()
				order = append(order, id)
				mu.Unlock()
				<-gate
			}
		}
	})
	var opened sync.Once
	open := func() { opened.Do(func() { close(gate) }) }
	t.Cleanup(open)
	started := func(n int) []string {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			mu.Lock()
			got := slices.Clone(order)
			mu.Unlock()
			if len(got) >= n || time.Now().After(deadline) {
				return got
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	ctx := context.Background()
	a, b := e.tenant("team-a"), e.tenant("team-b")
	a.deploy("nap", napModule(10*time.Millisecond), func(m *bundle.Manifest) { m.Capabilities.Clock = true })
	b.deploy("echo", fixture(t, "echo.wasm"), nil)
	var backlog []*client.Pending
	for range 6 {
		p, err := a.c.InvokeAsync(ctx, "nap", nil, client.AsyncOptions{})
		if err != nil {
			t.Fatal(err)
		}
		backlog = append(backlog, p)
	}
	if got := started(2); len(got) != 2 {
		t.Fatalf("%d of team-a's jobs started, want 2", len(got))
	}
	time.Sleep(time.Second) // four polls: team-a takes no third slot
	if got := started(0); len(got) != 2 {
		t.Fatalf("%d of team-a's jobs run at once, want its share, 2", len(got))
	}
	pb, err := b.c.InvokeAsync(ctx, "echo", []byte("b"), client.AsyncOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := started(3); len(got) != 3 || got[2] != pb.ActivationID {
		t.Fatalf("started %v; want team-b's %s third, while team-a's hold their share", got, pb.ActivationID)
	}
	open()
	for _, p := range append(backlog, pb) {
		c := a.c
		if p == pb {
			c = b.c
		}
		if _, err := wait(t, c, p); err != nil {
			t.Fatalf("activation %s: %v", p.ActivationID, err)
		}
	}
}

// TestAsyncOddSubjectsAreDrained: messages on subjects that no gateway
// uses (deeper, or not a namespace name) still reach a worker, and are
// dead-lettered, instead of sitting in the queue against its limits.
func TestAsyncOddSubjectsAreDrained(t *testing.T) {
	e := start(t)
	dead := deadLetters(t, e)
	nc, err := e.n.Bus().Connect("odd-publisher")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	for _, s := range []string{"x.y", "NotAName", "default"} {
		if err := nc.Publish(bus.SubjectAsyncPrefix+s, []byte("not a job")); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range dead(3) {
		if d.Code != apierr.BadRequest {
			t.Errorf("dead letter %+v", d)
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for asyncQueue(t, e.n).State.Msgs != 0 {
		if time.Now().After(deadline) {
			t.Fatal("odd messages are left in the queue")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
