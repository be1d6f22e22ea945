package node_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cloister-faas/cloister/client"
	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/gateway"
	"github.com/cloister-faas/cloister/internal/node"
)

// hostileAddr is the hostile client's address. Everything else in the test
// (the SDK client, the probes) connects from 127.0.0.1.
const hostileAddr = "127.0.0.2"

// dialHostile connects to addr from hostileAddr, with every read and write
// bounded by end. It skips the test where that address cannot be bound
// (all of 127/8 is local on Linux, not everywhere).
func dialHostile(t *testing.T, addr string, end time.Time) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(hostileAddr)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		if strings.Contains(err.Error(), "assign requested address") {
			t.Skipf("cannot connect from %s here: %v", hostileAddr, err)
		}
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(end)
	return c
}

// trickle writes b one byte every interval, until it is all sent, a write
// fails (the server closed the connection) or stop is closed.
func trickle(c net.Conn, b []byte, every time.Duration, stop <-chan struct{}) {
	go func() {
		for _, x := range b {
			select {
			case <-stop:
				return
			case <-time.After(every):
			}
			if _, err := c.Write([]byte{x}); err != nil {
				return
			}
		}
	}()
}

// readAnswer reads one response from r and decodes its JSON error body.
func readAnswer(r *bufio.Reader) (*http.Response, *apierr.Error, error) {
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, nil, err
	}
	var e apierr.Error
	_ = json.Unmarshal(b, &e)
	return resp, &e, nil
}

// serverClosed reads r to its end and reports an error unless the server
// closed the connection (our own deadline expiring means it did not).
func serverClosed(r io.Reader) error {
	_, err := io.Copy(io.Discard, r)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return errors.New("still open at the test's deadline")
	}
	return nil
}

// refusedNow dials from the hostile address and reports whether the edge
// refuses the connection with 503 overloaded (false: it was admitted).
func refusedNow(t *testing.T, addr string, end time.Time) bool {
	t.Helper()
	c := dialHostile(t, addr, end)
	defer c.Close()
	if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: cloister\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, e, err := readAnswer(bufio.NewReader(c))
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	switch {
	case resp.StatusCode == http.StatusOK:
		return false
	case resp.StatusCode != http.StatusServiceUnavailable || e.Code != apierr.Overloaded || !resp.Close:
		t.Fatalf("got %d %+v (close %v), want 503 overloaded with Connection: close", resp.StatusCode, e, resp.Close)
	}
	return true
}

// metric reads one sample from the node's /metrics.
func metric(t *testing.T, url, token, series string) float64 {
	t.Helper()
	sc := bufio.NewScanner(bytes.NewReader(scrape(t, url, token)))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	t.Fatalf("no %s in /metrics", series)
	return 0
}

// TestEdgeHostileClient plays a hostile client against a running node. It
// opens its per-address maximum of connections that send nothing, idle
// after a request, stop halfway through their headers, or trickle their
// body; then more, which are refused at once with 503 overloaded. While
// it holds them, /healthz and /readyz answer and another client's
// invocation succeeds. Then the edge's timeouts close every one of them,
// and the address may connect again.
func TestEdgeHostileClient(t *testing.T) {
	const (
		perClient = 8
		limit     = 5 * time.Second // the header, idle and body timeouts
		trickleAt = 100 * time.Millisecond
	)
	e := start(t, func(o *node.Options) {
		o.Wrap = nil // the recorder reads bodies whole: let the gateway read them as in production
		o.Edge = gateway.EdgeConfig{MaxConnsPerClient: perClient, ReadHeaderTimeout: limit, IdleTimeout: limit, BodyTimeout: limit}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	end, _ := ctx.Deadline()
	e.deploy("echo", fixture(t, "echo.wasm"), nil)
	// Attest and load echo before the attack, so that what follows
	// measures the edge, not a cold start.
	if _, err := e.c.Invoke(ctx, "echo", []byte("warm up"), client.InvokeOptions{}); err != nil {
		t.Fatal(err)
	}
	addr := strings.TrimPrefix(e.n.URL, "http://")
	stop := make(chan struct{})
	defer close(stop)

	type held struct {
		kind string
		c    net.Conn
		r    *bufio.Reader
	}
	var conns []held
	hold := func(kind string, c net.Conn) { conns = append(conns, held{kind, c, bufio.NewReader(c)}) }
	for range 2 {
		hold("silent", dialHostile(t, addr, end))
	}
	for range 2 {
		c := dialHostile(t, addr, end)
		r := bufio.NewReader(c)
		if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: cloister\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		if resp, _, err := readAnswer(r); err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("the request before idling: %v", err)
		}
		conns = append(conns, held{"idle keep-alive", c, r})
	}
	for range 2 {
		c := dialHostile(t, addr, end)
		if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: cloister\r\n"); err != nil {
			t.Fatal(err)
		}
		trickle(c, []byte("X-Slow: "+strings.Repeat("a", 1000)), trickleAt, stop)
		hold("slow headers", c)
	}
	for range 2 {
		c := dialHostile(t, addr, end)
		head := fmt.Sprintf("POST /v1/functions/echo/invoke HTTP/1.1\r\nHost: cloister\r\nAuthorization: Bearer %s\r\n"+
			"Content-Type: application/octet-stream\r\nContent-Length: 1000\r\n\r\n", e.n.Token)
		if _, err := io.WriteString(c, head); err != nil {
			t.Fatal(err)
		}
		trickle(c, bytes.Repeat([]byte{'x'}, 1000), trickleAt, stop)
		hold("slow body", c)
	}
	if len(conns) != perClient {
		t.Fatalf("holding %d connections, want %d", len(conns), perClient)
	}

	// (a) Past the cap, the edge refuses at once and says why.
	for i := range 3 {
		start := time.Now()
		if !refusedNow(t, addr, end) {
			t.Fatalf("extra connection %d was admitted past the cap of %d", i+1, perClient)
		}
		if d := time.Since(start); d > limit/2 {
			t.Errorf("refusing took %s", d)
		}
	}

	// (c) Meanwhile the node serves everyone else.
	for _, path := range []string{"/healthz", "/readyz"} {
		resp, err := http.Get(e.n.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: got %d, want 200", path, resp.StatusCode)
		}
	}
	res, err := e.c.Invoke(ctx, "echo", []byte("still served"), client.InvokeOptions{})
	if err != nil || string(res.Output) != "still served" {
		t.Fatalf("invoking while the hostile client holds its connections: %v", err)
	}
	// The hostile connections were held all along: the cap is still full.
	if !refusedNow(t, addr, end) {
		t.Fatal("the hostile client's connections were no longer held after the invocation; the timeouts are too short for this machine")
	}

	// (b) The timeouts close every held connection. A trickled body is
	// answered first.
	for _, h := range conns {
		if h.kind == "slow body" {
			resp, e, err := readAnswer(h.r)
			if err != nil {
				t.Fatalf("%s: reading the answer: %v", h.kind, err)
			}
			if resp.StatusCode != http.StatusBadRequest || e.Code != apierr.BadRequest || !strings.Contains(e.Message, "too slowly") || !resp.Close {
				t.Errorf("%s: got %d %+v (close %v), want 400 bad_request about a slow body", h.kind, resp.StatusCode, e, resp.Close)
			}
		}
		if err := serverClosed(h.r); err != nil {
			t.Errorf("%s: %v", h.kind, err)
		}
	}

	// The address may connect again once its connections are gone.
	for refusedNow(t, addr, end) {
		if time.Now().After(end) {
			t.Fatal("the hostile address stays refused after its connections closed")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n := metric(t, e.n.URL, e.n.Token, `cloister_http_connections_refused_total{reason="per_client"}`); n < 4 {
		t.Errorf("refusals per client: got %v, want at least 4", n)
	}
	if n := metric(t, e.n.URL, e.n.Token, `cloister_http_connections_refused_total{reason="total"}`); n != 0 {
		t.Errorf("refusals over the total cap: got %v, want 0", n)
	}
}
