package client_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloister-faas/cloister/client"
	"github.com/cloister-faas/cloister/internal/bundle"
	"github.com/cloister-faas/cloister/internal/certs"
	"github.com/cloister-faas/cloister/internal/node"
)

// TestFailoverInvoke runs sealed and plaintext invocations on a real node
// through gateways that fail in front of it: a gateway that refuses them
// with unavailable, and one that is gone, are failed over; one that takes
// the request and hangs up is not, and the call reports ErrOutcomeUnknown
// without reaching the node.
func TestFailoverInvoke(t *testing.T) {
	var invokes atomic.Int32 // invocations that reached the real gateway
	n, err := node.Start(context.Background(), node.Options{Dir: t.TempDir(), Addr: "127.0.0.1:0",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Wrap: func(h http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/invoke") {
					invokes.Add(1)
				}
				h.ServeHTTP(w, r)
			})
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	ctx := context.Background()

	// Deploy echo, allowed in plaintext too.
	pol, err := client.LoadPolicy(n.PolicyPath)
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(n.URL, n.Token, pol)
	if err != nil {
		t.Fatal(err)
	}
	module, err := os.ReadFile(filepath.Join("..", "internal", "sandbox", "testdata", "echo.wasm"))
	if err != nil {
		t.Fatal(err)
	}
	_, owner, _ := ed25519.GenerateKey(rand.Reader)
	m := bundle.DefaultManifest("echo")
	m.Version, m.Namespace, m.Confidential = 1, "default", bundle.ConfidentialOptional
	m.Invokers = &certs.Invokers{Kind: certs.InvokersAny}
	b, err := bundle.Build(m, module, owner)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Deploy(ctx, "echo", b); err != nil {
		t.Fatal(err)
	}

	// front proxies to the node, except invocations, which onInvoke answers.
	real, _ := url.Parse(n.URL)
	front := func(onInvoke http.HandlerFunc) *httptest.Server {
		p := httputil.NewSingleHostReverseProxy(real)
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/invoke") {
				io.Copy(io.Discard, r.Body)
				onInvoke(w, r)
				return
			}
			p.ServeHTTP(w, r)
		}))
		t.Cleanup(s.Close)
		return s
	}
	unavailable := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		w.Write([]byte(`{"code":"unavailable","message":"not connected to NATS"}`))
	}
	hangUp := func(w http.ResponseWriter, r *http.Request) {
		if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
			conn.Close()
		}
	}
	// newClient returns a client whose attestation and echo's certificate
	// came through the first gateway, to which it sticks.
	newClient := func(gws ...string) (*client.Client, *http.Transport) {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		c, err := client.New(strings.Join(gws, ","), n.Token, pol, client.WithHTTPClient(&http.Client{Transport: tr}))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Function(ctx, "echo", 0); err != nil {
			t.Fatal(err)
		}
		return c, tr
	}
	invoke := func(c *client.Client, plain bool) (*client.Result, error) {
		return c.Invoke(ctx, "echo", []byte(`{"n":1}`), client.InvokeOptions{Plaintext: plain})
	}

	for _, plain := range []bool{false, true} {
		mode := map[bool]string{false: "sealed", true: "plaintext"}[plain]

		// Refused with unavailable: nothing ran, so the next gateway runs it.
		busy := front(unavailable)
		c, _ := newClient(busy.URL, n.URL)
		before := invokes.Load()
		res, err := invoke(c, plain)
		if err != nil || string(res.Output) != `{"n":1}` {
			t.Fatalf("%s, after unavailable: got %v, want the output", mode, err)
		}
		if got := invokes.Load() - before; got != 1 {
			t.Errorf("%s: the node ran %d invocations, want 1", mode, got)
		}

		// Gone: no connection could be made, so the next gateway runs it.
		gone := front(unavailable)
		c, tr := newClient(gone.URL, n.URL)
		gone.Close()
		tr.CloseIdleConnections()
		if res, err := invoke(c, plain); err != nil || string(res.Output) != `{"n":1}` {
			t.Fatalf("%s, after a gateway went away: got %v, want the output", mode, err)
		}

		// Hung up after taking the request: not sent again.
		hung := front(hangUp)
		c, _ = newClient(hung.URL, n.URL)
		before = invokes.Load()
		_, err = invoke(c, plain)
		if !errors.Is(err, client.ErrOutcomeUnknown) || !strings.Contains(err.Error(), "request_sha256") {
			t.Errorf("%s, after a hang-up: got %v, want ErrOutcomeUnknown naming the request hash", mode, err)
		}
		if got := invokes.Load() - before; got != 0 {
			t.Errorf("%s: the call was sent again after a hang-up (%d times)", mode, got)
		}
	}

	// Ledger reads (the receipt lookup and the tiles) fail over too: the
	// first gateway refuses them.
	res, err := c.Invoke(ctx, "echo", []byte("logged"), client.InvokeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	noLedger := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/v1/ledger/") {
			unavailable(w, r)
			return
		}
		httputil.NewSingleHostReverseProxy(real).ServeHTTP(w, r)
	}))
	defer noLedger.Close()
	lc, _ := newClient(noLedger.URL, n.URL)
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, _, err := lc.VerifyInclusion(ctx, res.SignedReceipt)
		if err == nil {
			break
		}
		if !errors.Is(err, client.ErrNotLogged) || time.Now().After(deadline) {
			t.Fatalf("inclusion through a gateway that refuses ledger reads: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
