package node_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cloister-faas/cloister/client"
	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/async"
	"github.com/cloister-faas/cloister/internal/bundle"
	"github.com/cloister-faas/cloister/internal/bus"
	"github.com/cloister-faas/cloister/internal/node"
	"github.com/cloister-faas/cloister/internal/seal"
	"github.com/cloister-faas/cloister/internal/tee"
	"github.com/cloister-faas/cloister/internal/wire"
	"github.com/cloister-faas/cloister/internal/worker"
)

func wait(t *testing.T, c *client.Client, p *client.Pending) (*client.Result, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	return c.WaitActivation(ctx, p, 50*time.Millisecond)
}

// TestAsyncSealedEndToEnd queues a confidential invocation, reads its
// activation record, opens the sealed result and logs, and shows that the
// plaintext crossed neither the gateway, nor NATS, nor the disk.
func TestAsyncSealedEndToEnd(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	e.deploy("echo", fixture(t, "echo.wasm"), nil)
	secret := randomMarker()
	p, err := e.c.InvokeAsync(ctx, "echo", secret, client.AsyncOptions{IdempotencyKey: "order-17"})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.ActivationID) != 32 || p.Duplicate {
		t.Fatalf("activation id %q duplicate %v", p.ActivationID, p.Duplicate)
	}
	res, err := wait(t, e.c, p)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(res.Output, secret) || res.Receipt.Status != "ok" || res.Mode != wire.ModeHPKE {
		t.Fatalf("got %q (%s, %s), want the input back", res.Output, res.Receipt.Status, res.Mode)
	}
	// The same idempotency key returns the same activation and runs nothing.
	again, err := e.c.InvokeAsync(ctx, "echo", secret, client.AsyncOptions{IdempotencyKey: "order-17"})
	if err != nil {
		t.Fatal(err)
	}
	if again.ActivationID != p.ActivationID || !again.Duplicate {
		t.Fatalf("idempotent resubmission: got %s (duplicate %v), want %s", again.ActivationID, again.Duplicate, p.ActivationID)
	}
	// This client sent the same sealed request again, so the second
	// Pending opens the result too (a caller retrying after an unknown
	// outcome keeps only the second).
	if res, err := e.c.ActivationResult(ctx, again); err != nil || !bytes.Equal(res.Output, secret) {
		t.Fatalf("the resubmission's Pending: %v", err)
	}
	a, err := e.c.Activation(ctx, p.ActivationID)
	if err != nil {
		t.Fatal(err)
	}
	if a.Status != wire.StatusSuccess || !a.Response.Success || !a.Response.Sealed || a.Start == 0 || a.End < a.Start ||
		a.Duration != a.End-a.Start || a.Attempts != 1 || a.Name != "echo" || a.Version != 1 || a.Receipt == nil {
		t.Fatalf("record: %+v", a)
	}
	if bytes.Equal(a.Response.Result, secret) {
		t.Fatal("the record holds the plaintext result")
	}
	list, err := e.c.Activations(ctx, 10, "echo")
	if err != nil || len(list) != 1 || list[0].ActivationID != p.ActivationID {
		t.Fatalf("list: %v %+v", err, list)
	}
	// A second Pending (another process) cannot open this result.
	other := *p
	other.ResponseKey = bytes.Repeat([]byte{7}, 16)
	if _, err := e.c.ActivationResult(ctx, &other); !errors.Is(err, client.ErrVerification) {
		t.Fatalf("opening with the wrong key: %v", err)
	}
	time.Sleep(100 * time.Millisecond)
	if leaks(e.http.bytes(), secret) || leaks(e.bus.bytes(), secret) {
		t.Fatal("the async plaintext reached the gateway or the bus")
	}
}

// TestAsyncWorkerKilledMidInvocation kills the worker running an async
// invocation; JetStream delivers the job again to the other worker, and
// the caller sees exactly one completed activation.
func TestAsyncWorkerKilledMidInvocation(t *testing.T) {
	type attemptInfo struct{ worker, attempt int }
	started := make(chan attemptInfo, 10)
	release := make(chan struct{})
	e := start(t, func(o *node.Options) {
		o.Workers = 2
		o.Async = func(i int, c *worker.AsyncConfig) {
			c.AckWait = time.Second
			c.Started = func(_ string, attempt int) {
				started <- attemptInfo{i, attempt}
				if attempt == 1 {
					<-release // the worker "crashes" here, holding the job
				}
			}
		}
	})
	defer close(release)
	ctx := context.Background()
	e.deploy("echo", fixture(t, "echo.wasm"), nil)
	secret := randomMarker()
	p, err := e.c.InvokeAsync(ctx, "echo", secret, client.AsyncOptions{IdempotencyKey: "once"})
	if err != nil {
		t.Fatal(err)
	}
	first := <-started
	if first.attempt != 1 {
		t.Fatalf("first delivery is attempt %d", first.attempt)
	}
	// While it runs, the result is not there yet.
	var ce *client.Error
	if _, err := e.c.ActivationResult(ctx, p); !errors.As(err, &ce) || ce.Code != string(apierr.ActivationPending) || ce.Status != 409 {
		t.Fatalf("result of a running activation: %v", err)
	}
	if a, err := e.c.Activation(ctx, p.ActivationID); err != nil || a.Status != wire.StatusRunning {
		t.Fatalf("record of a running activation: %v %+v", err, a)
	}
	e.n.KillWorker(first.worker)
	res, err := wait(t, e.c, p)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(res.Output, secret) {
		t.Fatalf("got %q", res.Output)
	}
	// The retry is attempt 2, or 3 when JetStream first redelivered the
	// job to a pull request the dead worker had left outstanding.
	second := <-started
	if second.worker == first.worker || second.attempt < 2 {
		t.Fatalf("retry ran on worker %d attempt %d; want the other worker, a later attempt", second.worker, second.attempt)
	}
	a, err := e.c.Activation(ctx, p.ActivationID)
	if err != nil {
		t.Fatal(err)
	}
	if a.Attempts != second.attempt || a.Worker != e.n.WorkerID(second.worker) || a.Status != wire.StatusSuccess {
		t.Fatalf("record: attempts %d worker %s status %s", a.Attempts, a.Worker, a.Status)
	}
	if res.Worker.WorkerID != e.n.WorkerID(second.worker) {
		t.Fatalf("receipt from %s, want %s", res.Worker.WorkerID, e.n.WorkerID(second.worker))
	}
	// Resubmitting (a client that did not see the answer) changes nothing.
	again, err := e.c.InvokeAsync(ctx, "echo", secret, client.AsyncOptions{IdempotencyKey: "once"})
	if err != nil || again.ActivationID != p.ActivationID {
		t.Fatalf("resubmission: %v %v", err, again)
	}
	list, err := e.c.Activations(ctx, 50, "")
	if err != nil || len(list) != 1 {
		t.Fatalf("want exactly one activation, got %d (%v)", len(list), err)
	}
	select {
	case s := <-started:
		t.Fatalf("an extra attempt ran: %+v", s)
	case <-time.After(2500 * time.Millisecond): // longer than the ack wait: no redelivery
	}
}

// deadLetters collects the dead-letter subject.
func deadLetters(t *testing.T, e *env) func(n int) []wire.DeadLetter {
	nc, err := e.n.Bus().Connect("dlq-observer")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	var mu sync.Mutex
	var got []wire.DeadLetter
	if _, err := nc.Subscribe(bus.SubjectDeadPrefix+">", func(m *nats.Msg) {
		var d wire.DeadLetter
		if err := json.Unmarshal(m.Data, &d); err != nil || m.Header.Get(bus.HeaderDeadReason) != string(d.Code) {
			t.Errorf("malformed dead letter %q", m.Data)
		}
		mu.Lock()
		got = append(got, d)
		mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	nc.Flush()
	return func(n int) []wire.DeadLetter {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) {
			mu.Lock()
			k := len(got)
			mu.Unlock()
			if k >= n {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		mu.Lock()
		defer mu.Unlock()
		if len(got) < n {
			t.Fatalf("got %d dead letters, want %d", len(got), n)
		}
		return append([]wire.DeadLetter(nil), got...)
	}
}

// TestAsyncPoisonMessagesAreDeadLettered sends jobs that can never run:
// garbage on the queue, a tampered sealed request, a request sealed for the
// synchronous path, and a plaintext request to a confidential function.
// Each lands on the dead-letter subject with a reason, and the node keeps
// serving.
func TestAsyncPoisonMessagesAreDeadLettered(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	dead := deadLetters(t, e)
	e.deploy("echo", fixture(t, "echo.wasm"), nil)

	nc, err := e.n.Bus().Connect("poisoner")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if err := nc.Publish(bus.SubjectAsyncPrefix+"default", []byte("\x00not json")); err != nil {
		t.Fatal(err)
	}
	got := dead(1)
	if got[0].Code != apierr.BadRequest || !strings.Contains(got[0].Reason, "malformed job") || !bytes.Equal(got[0].JobBase64, []byte("\x00not json")) {
		t.Fatalf("garbage: %+v", got[0])
	}

	s := e.sealer("echo", 0)
	// Sealed for the synchronous path (seal.Info), then queued.
	syncSealed := s.seal([]byte("x"), time.Now(), 1, "echo")
	tampered := s.seal([]byte("y"), time.Now(), 1, "echo")
	tampered.Ciphertext[3] ^= 1
	var ids []string
	for _, sr := range []wire.SealedRequest{syncSealed, tampered} {
		code, acc := e.postAsync("/v1/functions/echo/invoke?async=true", wire.SealedContentType, mustJSON(sr))
		if code != http.StatusAccepted {
			t.Fatalf("queueing: HTTP %d", code)
		}
		ids = append(ids, acc.ActivationID)
	}
	got = dead(3)
	for i, id := range ids {
		a, err := e.c.Activation(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if a.Status != wire.StatusPlatformError || a.Response.Error == nil || a.Response.Error.Code != string(apierr.DecryptFailed) {
			t.Fatalf("activation %d: %+v", i, a)
		}
		found := false
		for _, d := range got {
			found = found || (d.Activation == id && d.Code == apierr.DecryptFailed && d.Reason != "" && d.Attempts == 1)
		}
		if !found {
			t.Fatalf("no dead letter for %s in %+v", id, got)
		}
	}
	// The namespace lists its dead letters (GET /v1/dead-letters), without
	// the jobs; the garbage, whose namespace nobody knows, is not among them.
	l, err := e.c.DeadLetters(ctx, 0, time.Time{})
	if err != nil || len(l) != 2 {
		t.Fatalf("dead letters: %+v %v", l, err)
	}
	for _, d := range l {
		if !slices.Contains(ids, d.Activation) || d.Code != string(apierr.DecryptFailed) || d.Name != "echo" {
			t.Errorf("listed dead letter %+v", d)
		}
	}
	if st, body := getWithKey(t, e.n.URL+"/v1/dead-letters", e.n.Token); st != http.StatusOK || bytes.Contains(body, []byte(`"job`)) {
		t.Errorf("the listing (HTTP %d) carries jobs: %s", st, body)
	}
	if l[0].Time.Before(l[1].Time) {
		t.Errorf("not newest first: %v, %v", l[0].Time, l[1].Time)
	}
	if l, err := e.c.DeadLetters(ctx, 1, time.Now().Add(time.Minute)); err != nil || len(l) != 0 {
		t.Errorf("dead letters since a minute ahead: %+v %v", l, err)
	}
	for _, q := range []string{"limit=0", "limit=201", "limit=x", "since=yesterday"} {
		req, _ := http.NewRequest(http.MethodGet, e.n.URL+"/v1/dead-letters?"+q, nil)
		req.Header.Set("Authorization", "Bearer "+e.n.Token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("dead letters ?%s: HTTP %d", q, resp.StatusCode)
		}
	}
	// The node still serves.
	p, err := e.c.InvokeAsync(ctx, "echo", []byte("fine"), client.AsyncOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res, err := wait(t, e.c, p); err != nil || string(res.Output) != "fine" {
		t.Fatalf("after poison: %v", err)
	}
}

// postAsync posts with the admin key and decodes a 202 answer.
func (e *env) postAsync(path, ctype string, body []byte) (int, wire.Accepted) {
	e.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, e.n.URL+path, bytes.NewReader(body))
	req.Header.Set("Content-Type", ctype)
	req.Header.Set("Authorization", "Bearer "+e.n.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var acc wire.Accepted
	json.Unmarshal(b, &acc)
	return resp.StatusCode, acc
}

// TestAsyncBadInput checks the stable codes of bad async requests.
func TestAsyncBadInput(t *testing.T) {
	e := start(t)
	e.deploy("echo", fixture(t, "echo.wasm"), nil)
	get := func(path string) (int, apierr.Code) {
		req, _ := http.NewRequest(http.MethodGet, e.n.URL+path, nil)
		req.Header.Set("Authorization", "Bearer "+e.n.Token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var ae apierr.Error
		json.NewDecoder(resp.Body).Decode(&ae)
		return resp.StatusCode, ae.Code
	}
	for _, c := range []struct {
		path   string
		status int
		code   apierr.Code
	}{
		{"/v1/activations/0123456789abcdef0123456789abcdef", 404, apierr.NotFound},
		{"/v1/activations/0123456789abcdef0123456789abcdef/result", 404, apierr.NotFound},
		{"/v1/activations/0123456789abcdef0123456789abcdef/logs", 404, apierr.NotFound},
		{"/v1/activations/not-an-id", 400, apierr.BadRequest},
		{"/v1/activations?limit=0", 400, apierr.BadRequest},
		{"/v1/activations?limit=abc", 400, apierr.BadRequest},
	} {
		if st, code := get(c.path); st != c.status || code != c.code {
			t.Errorf("GET %s: got %d %s, want %d %s", c.path, st, code, c.status, c.code)
		}
	}
	posts := []struct {
		name, path, ctype string
		body              []byte
		status            int
		code              apierr.Code
	}{
		{"plaintext to a confidential function", "/v1/functions/echo/invoke?async=true", "application/octet-stream", []byte("x"), 403, apierr.ConfidentialRequired},
		{"unknown function", "/v1/functions/nope/invoke?async=true", wire.SealedContentType, mustJSON(wire.SealedRequest{Mode: wire.ModeHPKE}), 404, apierr.NotFound},
		{"session mode queued", "/v1/functions/echo/invoke?async=true", wire.SealedContentType, mustJSON(wire.SealedRequest{Mode: wire.ModeSession}), 400, apierr.BadRequest},
		{"malformed sealed body", "/v1/functions/echo/invoke?async=true", wire.SealedContentType, []byte("{"), 400, apierr.BadRequest},
		{"bad async flag", "/v1/functions/echo/invoke?async=maybe", wire.SealedContentType, []byte("{}"), 400, apierr.BadRequest},
		{"oversized", "/v1/functions/echo/invoke?async=true", wire.SealedContentType, make([]byte, 9<<20), 413, apierr.PayloadTooLarge},
	}
	for _, c := range posts {
		st, eb := e.post(c.path, c.ctype, e.n.Token, c.body)
		if st != c.status || eb.Code != c.code {
			t.Errorf("%s: got %d %s, want %d %s", c.name, st, eb.Code, c.status, c.code)
		}
	}
	// An over-long idempotency key.
	req, _ := http.NewRequest(http.MethodPost, e.n.URL+"/v1/functions/echo/invoke?async=true", bytes.NewReader(mustJSON(e.sealer("echo", 0).seal([]byte("x"), time.Now(), 1, "echo"))))
	req.Header.Set("Content-Type", wire.SealedContentType)
	req.Header.Set("Authorization", "Bearer "+e.n.Token)
	req.Header.Set("Idempotency-Key", strings.Repeat("k", 300))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Errorf("long idempotency key: HTTP %d", resp.StatusCode)
	}
}

// asyncInfoDiffers guards the cross-path refusal: the async info must not
// equal the synchronous one.
func TestAsyncInfoDiffersFromSync(t *testing.T) {
	if bytes.Equal(seal.AsyncInfo("ns", "f", 1, "h"), seal.Info("ns", "f", 1, "h")) {
		t.Fatal("async and sync requests share an HPKE info")
	}
}

// TestAsyncRetriesThenDeadLetters queues a job that fails for a platform
// reason on every attempt (no worker's TEE satisfies the function's
// policy): it is retried with backoff, then dead-lettered.
func TestAsyncRetriesThenDeadLetters(t *testing.T) {
	e := start(t, func(o *node.Options) {
		o.Async = func(_ int, c *worker.AsyncConfig) {
			c.Attempts, c.Backoff = 3, []time.Duration{10 * time.Millisecond, 20 * time.Millisecond}
		}
	})
	ctx := context.Background()
	dead := deadLetters(t, e)
	e.deploy("tdx-only", fixture(t, "echo.wasm"), func(m *bundle.Manifest) {
		openToAll(m)
		m.TEE.Allow = []tee.Kind{tee.KindTDX}
	})
	p, err := e.c.InvokeAsync(ctx, "tdx-only", []byte("x"), client.AsyncOptions{Plaintext: true})
	if err != nil {
		t.Fatal(err)
	}
	got := dead(1)
	d := got[0]
	if d.Activation != p.ActivationID || d.Code != apierr.TEEPolicy || d.Attempts != 3 || !strings.Contains(d.Reason, "all 3 attempts failed") {
		t.Fatalf("dead letter: %+v", d)
	}
	a, err := e.c.Activation(ctx, p.ActivationID)
	if err != nil {
		t.Fatal(err)
	}
	retries := 0
	for _, l := range a.Logs {
		if strings.Contains(l, "retrying in") {
			retries++
		}
	}
	if a.Status != wire.StatusPlatformError || a.Attempts != 3 || retries != 2 {
		t.Fatalf("record: status %s attempts %d retries %d\n%s", a.Status, a.Attempts, retries, strings.Join(a.Logs, "\n"))
	}
	var ce *client.Error
	if _, err := e.c.ActivationResult(ctx, p); !errors.As(err, &ce) || ce.Code != string(apierr.TEEPolicy) {
		t.Fatalf("result: %v", err)
	}
}

// TestAsyncBusyCostsNoAttempt: jobs that find their function at its
// concurrency limit wait in the queue without spending attempts, so a
// burst larger than the limit completes instead of being dead-lettered.
func TestAsyncBusyCostsNoAttempt(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	e.deploy("slow", fixture(t, "sleep.wasm"), func(m *bundle.Manifest) {
		m.Capabilities.Clock = true
		m.Limits.Concurrency = 1
	})
	var ps []*client.Pending
	for range 4 {
		p, err := e.c.InvokeAsync(ctx, "slow", nil, client.AsyncOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ps = append(ps, p)
	}
	deadline := time.Now().Add(60 * time.Second)
	for _, p := range ps {
		for {
			r, err := e.c.ActivationResult(ctx, p)
			var ce *client.Error
			if errors.As(err, &ce) && ce.Code == string(apierr.ActivationPending) && time.Now().Before(deadline) {
				time.Sleep(100 * time.Millisecond)
				continue
			}
			if err != nil || string(r.Output) != "slept" {
				t.Fatalf("activation %s: %v", p.ActivationID, err)
			}
			break
		}
		a, err := e.c.Activation(ctx, p.ActivationID)
		if err != nil {
			t.Fatal(err)
		}
		if a.Attempts != 1 {
			t.Errorf("activation %s took %d attempts, want 1 (waiting for room is not an attempt): %v", p.ActivationID, a.Attempts, a.Logs)
		}
	}
}

// TestAsyncRecordSeenLate: a worker that cannot read a job's activation
// record yet (a key-value replica that lags behind the one the gateway
// wrote it to) waits for it instead of dead-lettering the job, which was
// acknowledged: the fault test found such jobs lost.
func TestAsyncRecordSeenLate(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	e.deploy("open-echo", fixture(t, "echo.wasm"), openToAll)
	nc, err := e.n.Bus().Connect("late-writer")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	kv, err := js.KeyValue(ctx, bus.BucketActivations)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	id := async.NewID(now)
	req := wire.InvokeRequest{Namespace: "default", Name: "open-echo", Mode: wire.ModePlain, Plain: []byte("late"), Activation: id}
	if _, err := js.Publish(ctx, bus.SubjectAsyncPrefix+"default", mustJSON(wire.AsyncJob{Activation: id, Request: req, Submitted: now})); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond) // the workers took the job and found no record
	rec := wire.Activation{ActivationID: id, Namespace: "default", Name: "open-echo", Kind: "function", Mode: wire.ModePlain,
		Trust: wire.TrustGatewayTrusted, Status: wire.StatusQueued, Submitted: async.Millis(now)}
	if _, err := kv.Create(ctx, "a.default."+id, mustJSON(rec)); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		a, err := e.c.Activation(ctx, id)
		if err == nil && wire.FinalStatus(a.Status) {
			if a.Status != wire.StatusSuccess || string(a.Response.Result) != "late" {
				t.Fatalf("activation: %s %q %+v", a.Status, a.Response.Result, a.Response.Error)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the job never ran: %+v %v", a, err)
		}
	}
}

// unansweredJS is a JetStream handle whose first consumer deletion finds
// no answer, as while a NATS node restarts.
type unansweredJS struct {
	jetstream.JetStream
	calls *atomic.Int32
}

func (u unansweredJS) DeleteConsumer(ctx context.Context, stream, consumer string) error {
	if u.calls.Add(1) == 1 {
		return errors.New("nats: no response from stream")
	}
	return u.JetStream.DeleteConsumer(ctx, stream, consumer)
}

// TestAsyncQueueSetUpRetried: a worker whose async queue cannot be set up
// at first (JetStream does not answer) sets it up again, and takes jobs.
// Before, the queue stopped for good, and the jobs waited for a restart.
func TestAsyncQueueSetUpRetried(t *testing.T) {
	var calls atomic.Int32
	asyncEchoOnFaultyStores(t, "queued", func(st *bus.AsyncStores) {
		st.JS = unansweredJS{JetStream: st.JS, calls: &calls}
	})
	if calls.Load() < 2 {
		t.Errorf("the set-up ran %d times, want a second time after the failure", calls.Load())
	}
}

// asyncEchoOnFaultyStores starts a node whose workers' async stores fault
// (as fault makes them), queues an async call of the echo fixture with in,
// waits for its result and checks it. It returns the client and the call.
func asyncEchoOnFaultyStores(t *testing.T, in string, fault func(*bus.AsyncStores)) (*client.Client, *client.Pending) {
	t.Helper()
	e := start(t, func(o *node.Options) {
		o.Async = func(_ int, c *worker.AsyncConfig) {
			st := *c.Stores
			fault(&st)
			c.Stores = &st
		}
	})
	ctx := context.Background()
	e.deploy("echo", fixture(t, "echo.wasm"), openToAll)
	p, err := e.c.InvokeAsync(ctx, "echo", []byte(in), client.AsyncOptions{Plaintext: true})
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	r, err := e.c.WaitActivation(rctx, p, 50*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if string(r.Output) != in {
		t.Errorf("output %q, want %q", r.Output, in)
	}
	return e.c, p
}

// finalLostKV is an activation bucket whose first two writes of a final
// record find no answer, as while the bucket's NATS leader is elected
// again.
type finalLostKV struct {
	jetstream.KeyValue
	lost *atomic.Int32
}

func (k finalLostKV) Update(ctx context.Context, key string, value []byte, last uint64) (uint64, error) {
	var a wire.Activation
	if json.Unmarshal(value, &a) == nil && wire.FinalStatus(a.Status) && k.lost.Add(1) <= 2 {
		return 0, errors.New("nats: no response from stream")
	}
	return k.KeyValue.Update(ctx, key, value, last)
}

// TestAsyncResultRecordedOnce: a job that ran, and whose result the store
// did not take at first, is not handed back to the queue (which would run
// it again): the worker records the result once the store answers.
func TestAsyncResultRecordedOnce(t *testing.T) {
	var lost atomic.Int32
	c, p := asyncEchoOnFaultyStores(t, "once", func(st *bus.AsyncStores) {
		st.Activations = finalLostKV{KeyValue: st.Activations, lost: &lost}
	})
	a, err := c.Activation(context.Background(), p.ActivationID)
	if err != nil {
		t.Fatal(err)
	}
	if a.Attempts != 1 || lost.Load() < 3 {
		t.Fatalf("%d attempts (want 1: the job ran once), %d writes of the result (want 3: two lost); logs %q", a.Attempts, lost.Load(), a.Logs)
	}
}
