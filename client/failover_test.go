package client

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/cloister-faas/cloister/internal/apierr"
)

// fakeGateway answers the few routes these tests call, and counts the
// requests it saw.
type fakeGateway struct {
	*httptest.Server
	hits atomic.Int32
}

func newFake(t *testing.T, h http.HandlerFunc) *fakeGateway {
	t.Helper()
	f := &fakeGateway{}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.hits.Add(1)
		h(w, r)
	}))
	t.Cleanup(f.Close)
	return f
}

// good answers like a healthy gateway.
func good(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	switch {
	case r.URL.Path == "/v1/whoami":
		w.Write([]byte(`{"namespace":"default"}`))
	case strings.HasSuffix(r.URL.Path, "/invoke") && r.URL.Query().Get("async") == "true":
		w.WriteHeader(http.StatusAccepted)
		w.Write([]byte(`{"activationId":"act-1"}`))
	case r.URL.Path == "/v1/tokens":
		w.Write([]byte(`{"token":"clk_new"}`))
	default:
		refuse(w, apierr.NotFound)
	}
}

func refuse(w http.ResponseWriter, code apierr.Code) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code.Status())
	w.Write([]byte(`{"code":"` + string(code) + `","message":"test"}`))
}

// refusing answers every request with code.
func refusing(code apierr.Code) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) { refuse(w, code) }
}

// hangUp reads the request and closes the connection without answering:
// whether the request ran is unknown to the client.
func hangUp(w http.ResponseWriter, r *http.Request) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err == nil {
		conn.Close()
	}
}

// deadURL is the URL of a listener that was closed: connections are refused.
func deadURL(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := "http://" + l.Addr().String()
	l.Close()
	return u
}

func newTestClient(t *testing.T, urls ...string) *Client {
	t.Helper()
	c, err := New(strings.Join(urls, ","), "clk_test", Policy{AllowTEE: []string{"sim"}, Measurements: []string{strings.Repeat("00", 32)}, SimRoots: []string{strings.Repeat("00", 32)}})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestParseGateways(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"http://127.0.0.1:8080", []string{"http://127.0.0.1:8080"}},
		{"https://gw.example/", []string{"https://gw.example"}},
		{"https://gw.example/base/", []string{"https://gw.example/base"}},
		{"http://a:1, http://b:2 ,http://c:3", []string{"http://a:1", "http://b:2", "http://c:3"}},
		{"http://a:1,http://a:1/", []string{"http://a:1"}},
	} {
		got, err := parseGateways(tc.in)
		if err != nil || strings.Join(got, " ") != strings.Join(tc.want, " ") {
			t.Errorf("parseGateways(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	for _, in := range []string{"", "gw.example:8080", "ftp://gw.example", "http://", "http://a:1,", "http://a:1,,http://b:2", "http://a:1,gw.example"} {
		if got, err := parseGateways(in); err == nil {
			t.Errorf("parseGateways(%q) = %q, want an error", in, got)
		}
	}
}

// TestFailoverGET: a GET goes past a dead gateway and one that answers
// unavailable to a good one, and the client then sticks to the good one.
func TestFailoverGET(t *testing.T) {
	dead := deadURL(t)
	busy := newFake(t, refusing(apierr.Unavailable))
	ok := newFake(t, good)
	c := newTestClient(t, dead, busy.URL, ok.URL)
	ctx := context.Background()
	for i := range 3 {
		ns, err := c.KeyNamespace(ctx)
		if err != nil || ns != "default" {
			t.Fatalf("call %d: KeyNamespace = %q, %v; want default", i, ns, err)
		}
	}
	if got, want := busy.hits.Load(), int32(1); got != want {
		t.Errorf("the unavailable gateway saw %d requests, want %d (the client sticks to the one that answered)", got, want)
	}
	if got := ok.hits.Load(); got != 3 {
		t.Errorf("the good gateway saw %d requests, want 3", got)
	}
}

// TestFailoverGETAmbiguous: a GET is idempotent, so it is sent again after
// a gateway hung up on it, and after a 504.
func TestFailoverGETAmbiguous(t *testing.T) {
	gone := newFake(t, hangUp)
	slow := newFake(t, refusing(apierr.Timeout))
	ok := newFake(t, good)
	c := newTestClient(t, gone.URL, slow.URL, ok.URL)
	if ns, err := c.KeyNamespace(context.Background()); err != nil || ns != "default" {
		t.Fatalf("KeyNamespace = %q, %v; want default", ns, err)
	}
}

// TestFailoverNotRun: a request that is not idempotent fails over where
// nothing ran: no connection, or a code that says so.
func TestFailoverNotRun(t *testing.T) {
	ctx := context.Background()
	for _, code := range []apierr.Code{apierr.Unavailable, apierr.NoWorker, apierr.Overloaded} {
		busy := newFake(t, refusing(code))
		ok := newFake(t, good)
		c := newTestClient(t, deadURL(t), busy.URL, ok.URL)
		p, err := c.InvokeAsync(ctx, "echo", []byte("hi"), AsyncOptions{Plaintext: true})
		if err != nil || p.ActivationID != "act-1" {
			t.Fatalf("%s: InvokeAsync = %+v, %v; want act-1", code, p, err)
		}
		if tok, err := c.CreateToken(ctx, "team", "k"); err != nil || tok != "clk_new" {
			t.Fatalf("%s: CreateToken = %q, %v", code, tok, err)
		}
		if busy.hits.Load() != 1 || ok.hits.Load() != 2 {
			t.Errorf("%s: hits %d, %d; want 1, 2", code, busy.hits.Load(), ok.hits.Load())
		}
	}
}

// TestNoResendWhenOutcomeUnknown: a request that is not idempotent and
// reached a gateway without an answer is not sent again; its error wraps
// ErrOutcomeUnknown. A function's own failure is an answer, not a reason
// to fail over.
func TestNoResendWhenOutcomeUnknown(t *testing.T) {
	ctx := context.Background()
	proxy502 := func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusBadGateway)
		w.Write([]byte("<html>bad gateway</html>"))
	}
	for _, tc := range []struct {
		name string
		h    http.HandlerFunc
	}{{"hang-up", hangUp}, {"proxy 502", proxy502}} {
		first := newFake(t, tc.h)
		ok := newFake(t, good)
		c := newTestClient(t, first.URL, ok.URL)
		_, err := c.InvokeAsync(ctx, "echo", []byte("hi"), AsyncOptions{Plaintext: true})
		if !errors.Is(err, ErrOutcomeUnknown) {
			t.Errorf("%s: InvokeAsync without a key: got %v, want ErrOutcomeUnknown", tc.name, err)
		} else if !strings.Contains(err.Error(), "may or may not have run") || !strings.Contains(err.Error(), "Activations") {
			t.Errorf("%s: the error does not say what happened and how to check: %v", tc.name, err)
		}
		if _, err := c.CreateToken(ctx, "team", "k"); !errors.Is(err, ErrOutcomeUnknown) {
			t.Errorf("%s: CreateToken: got %v, want ErrOutcomeUnknown", tc.name, err)
		}
		if n := ok.hits.Load(); n != 0 {
			t.Errorf("%s: the request was sent again (%d times)", tc.name, n)
		}
		// With an idempotency key, the submission is sent again.
		p, err := c.InvokeAsync(ctx, "echo", []byte("hi"), AsyncOptions{Plaintext: true, IdempotencyKey: "k1"})
		if err != nil || p.ActivationID != "act-1" {
			t.Errorf("%s: InvokeAsync with a key = %+v, %v; want act-1 from the next gateway", tc.name, p, err)
		}
	}

	// A 504 timeout says the invocation may have run: no failover, the
	// platform's answer is returned.
	slow := newFake(t, refusing(apierr.Timeout))
	ok := newFake(t, good)
	c := newTestClient(t, slow.URL, ok.URL)
	_, err := c.InvokeAsync(ctx, "echo", []byte("hi"), AsyncOptions{Plaintext: true})
	var e *Error
	if !errors.As(err, &e) || e.Code != string(apierr.Timeout) || errors.Is(err, ErrOutcomeUnknown) {
		t.Errorf("after a 504 timeout: got %v, want the timeout error", err)
	}
	if ok.hits.Load() != 0 {
		t.Errorf("a call that timed out was sent again")
	}
}

// TestAllGatewaysFail: the last answer is returned, or every transport
// error when none answered; each gateway is tried once.
func TestAllGatewaysFail(t *testing.T) {
	ctx := context.Background()
	busy := newFake(t, refusing(apierr.NoWorker))
	c := newTestClient(t, deadURL(t), busy.URL, deadURL(t))
	_, err := c.KeyNamespace(ctx)
	var e *Error
	if !errors.As(err, &e) || e.Code != string(apierr.NoWorker) {
		t.Errorf("got %v, want the no_worker answer", err)
	}
	if busy.hits.Load() != 1 {
		t.Errorf("the answering gateway saw %d requests, want 1", busy.hits.Load())
	}

	c = newTestClient(t, deadURL(t), deadURL(t))
	_, err = c.KeyNamespace(ctx)
	var oe *net.OpError
	if err == nil || !errors.As(err, &oe) || !strings.Contains(err.Error(), "2 tried") {
		t.Errorf("got %v, want both connection errors", err)
	}
	c = newTestClient(t, deadURL(t))
	if _, err = c.KeyNamespace(ctx); err == nil || !strings.HasPrefix(err.Error(), "reaching gateway: ") {
		t.Errorf("one gateway: got %v, want the error as before", err)
	}
	// A request that never left the client is safe to report as such.
	if errors.Is(err, ErrOutcomeUnknown) {
		t.Errorf("a refused connection reported as outcome unknown: %v", err)
	}
}

// TestReadAnswer: a body whose length the gateway sent is read into one
// buffer of that size; a body cut short is an error; without a length the
// body is read to its end.
func TestReadAnswer(t *testing.T) {
	body := strings.Repeat("r", 3000)
	b, err := readAnswer(strings.NewReader(body), int64(len(body)))
	if err != nil || string(b) != body {
		t.Fatalf("with its length: %d bytes, %v", len(b), err)
	}
	if n := testing.AllocsPerRun(20, func() { _, _ = readAnswer(strings.NewReader(body), int64(len(body))) }); n > 2 {
		t.Errorf("reading %d bytes of known length allocates %v times, want at most 2 (the reader and the buffer)", len(body), n)
	}
	if _, err := readAnswer(strings.NewReader(body[:10]), int64(len(body))); err == nil {
		t.Error("a body shorter than its length: no error")
	}
	if b, err := readAnswer(strings.NewReader(body), -1); err != nil || string(b) != body {
		t.Errorf("without a length: %d bytes, %v", len(b), err)
	}
}
