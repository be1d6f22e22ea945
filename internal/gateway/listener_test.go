package gateway

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cloister-faas/cloister/internal/apierr"
)

var quiet = slog.New(slog.DiscardHandler)

// edgeServer serves h behind the edge on a loopback port.
func edgeServer(t *testing.T, c EdgeConfig, h http.Handler) (*LimitListener, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ll, err := NewLimitListener(ln, c, nil, quiet)
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(h, c, quiet)
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ll) }()
	t.Cleanup(func() { _ = srv.Close(); <-done })
	return ll, ln.Addr().String()
}

// dialFrom connects to addr from the loopback address from. It skips the
// test where from cannot be bound (all of 127/8 is local on Linux only).
func dialFrom(t *testing.T, from, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		if from != "127.0.0.1" && strings.Contains(err.Error(), "assign requested address") {
			t.Skipf("cannot connect from %s here: %v", from, err)
		}
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// value is the value of a counter or gauge (through Collect, as a scrape
// would read it).
func value(t *testing.T, c prometheus.Collector) float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(c); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil || len(mfs) != 1 || len(mfs[0].GetMetric()) != 1 {
		t.Fatalf("gathering: %v", err)
	}
	m := mfs[0].GetMetric()[0]
	if g := m.GetGauge(); g != nil {
		return g.GetValue()
	}
	return m.GetCounter().GetValue()
}

// eventually polls cond for up to d.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(d); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("not within %s: %s", d, what)
		}
	}
}

// readRefusal reads the edge's answer to a connection over a cap.
func readRefusal(t *testing.T, c net.Conn) *apierr.Error {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("reading the refusal: %v", err)
	}
	defer resp.Body.Close()
	var e apierr.Error
	if err := json.NewDecoder(resp.Body).Decode(&e); err != nil {
		t.Fatalf("refusal body: %v", err)
	}
	if resp.StatusCode != http.StatusServiceUnavailable || e.Code != apierr.Overloaded || !resp.Close {
		t.Fatalf("got %d %+v (close %v), want 503 overloaded and Connection: close", resp.StatusCode, e, resp.Close)
	}
	return &e
}

// get sends a GET on c and returns the status.
func get(t *testing.T, c net.Conn, path string) int {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: edge\r\n\r\n", path); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	_ = c.SetDeadline(time.Time{})
	return resp.StatusCode
}

// waitClosed waits up to d for the server to close c, reading and
// dropping what it sends.
func waitClosed(t *testing.T, c net.Conn, d time.Duration) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the server still holds the connection after %s", d)
	}
}

var ok = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") })

func TestClientKey(t *testing.T) {
	for _, tc := range []struct {
		addr net.Addr
		want string
	}{
		{&net.TCPAddr{IP: net.ParseIP("192.0.2.7"), Port: 1}, "192.0.2.7"},
		{&net.TCPAddr{IP: net.ParseIP("::ffff:192.0.2.7"), Port: 2}, "192.0.2.7"},
		{&net.TCPAddr{IP: net.ParseIP("2001:db8:1:2:3:4:5:6"), Port: 3}, "2001:db8:1:2::"},
		{&net.TCPAddr{IP: net.ParseIP("2001:db8:1:2:ffff::1"), Port: 4}, "2001:db8:1:2::"},
		{&net.TCPAddr{IP: net.ParseIP("fe80::1"), Port: 5, Zone: "eth0"}, "fe80::"},
		{&net.UnixAddr{Name: "/tmp/sock", Net: "unix"}, "invalid IP"},
		{nil, "invalid IP"},
	} {
		if got := clientKey(tc.addr).String(); got != tc.want {
			t.Errorf("clientKey(%v): got %s, want %s", tc.addr, got, tc.want)
		}
	}
	if clientKey(&net.TCPAddr{IP: net.ParseIP("2001:db8:1:2::1")}) == clientKey(&net.TCPAddr{IP: net.ParseIP("2001:db8:1:3::1")}) {
		t.Error("two IPv6 /64s share a key")
	}
}

func TestEdgeConfigDefaults(t *testing.T) {
	got := EdgeConfig{MaxConnsPerClient: -1, IdleTimeout: time.Second, MinRate: -5}.withDefaults()
	want := EdgeConfig{MaxConns: DefaultMaxConns, MaxConnsPerClient: -1, ReadHeaderTimeout: DefaultReadHeaderTimeout,
		IdleTimeout: time.Second, BodyTimeout: DefaultBodyTimeout, WriteTimeout: DefaultWriteTimeout, MinRate: DefaultMinRate}
	if got != want {
		t.Fatalf("got %+v, want %+v", got, want)
	}
}

func TestLimitListenerPerClient(t *testing.T) {
	ll, addr := edgeServer(t, EdgeConfig{MaxConnsPerClient: 3}, ok)
	var held []net.Conn
	for range 3 {
		held = append(held, dialFrom(t, "127.0.0.1", addr))
	}
	extra := dialFrom(t, "127.0.0.1", addr)
	start := time.Now()
	e := readRefusal(t, extra)
	if !strings.Contains(e.Message, "at most 3") {
		t.Errorf("message %q does not name the cap", e.Message)
	}
	waitClosed(t, extra, 5*time.Second)
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("the refusal took %s", d)
	}
	if got := value(t, ll.refused.WithLabelValues(RefusedPerClient)); got != 1 {
		t.Errorf("refused per_client: got %v, want 1", got)
	}
	if total, client := ll.Open(held[0].LocalAddr()); total != 3 || client != 3 {
		t.Errorf("open: got %d total, %d from the client, want 3 and 3", total, client)
	}
	// A held connection works; closing one makes room for another.
	if got := get(t, held[0], "/"); got != http.StatusOK {
		t.Fatalf("a held connection: got %d, want 200", got)
	}
	held[1].Close()
	eventually(t, 5*time.Second, "the closed connection is uncounted", func() bool { n, _ := ll.Open(nil); return n == 2 })
	if got := get(t, dialFrom(t, "127.0.0.1", addr), "/"); got != http.StatusOK {
		t.Fatalf("after a close: got %d, want 200", got)
	}
}

// TestLimitListenerOtherClient shows a client at its cap does not keep
// another address out.
func TestLimitListenerOtherClient(t *testing.T) {
	_, addr := edgeServer(t, EdgeConfig{MaxConnsPerClient: 2}, ok)
	for range 2 {
		dialFrom(t, "127.0.0.2", addr)
	}
	readRefusal(t, dialFrom(t, "127.0.0.2", addr))
	if got := get(t, dialFrom(t, "127.0.0.1", addr), "/"); got != http.StatusOK {
		t.Fatalf("another address: got %d, want 200", got)
	}
}

func TestLimitListenerTotal(t *testing.T) {
	ll, addr := edgeServer(t, EdgeConfig{MaxConns: 2, MaxConnsPerClient: -1}, ok)
	a, b := dialFrom(t, "127.0.0.1", addr), dialFrom(t, "127.0.0.1", addr)
	e := readRefusal(t, dialFrom(t, "127.0.0.1", addr))
	if !strings.Contains(e.Message, "maximum of 2") {
		t.Errorf("message %q does not name the cap", e.Message)
	}
	if got := value(t, ll.refused.WithLabelValues(RefusedTotal)); got != 1 {
		t.Errorf("refused total: got %v, want 1", got)
	}
	if got := value(t, ll.open); got != 2 {
		t.Errorf("open gauge: got %v, want 2", got)
	}
	a.Close()
	b.Close()
	eventually(t, 5*time.Second, "the gauge drops to 0", func() bool { return value(t, ll.open) == 0 })
}

func TestLimitListenerMetricsRegistered(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	reg := prometheus.NewRegistry()
	if _, err := NewLimitListener(ln, EdgeConfig{}, reg, quiet); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	n := 0
	for _, mf := range mfs {
		n += len(mf.GetMetric())
	}
	if err != nil || n != 3 {
		t.Fatalf("got %d series (%v), want 3: both refusal reasons and the gauge", n, err)
	}
	if _, err := NewLimitListener(ln, EdgeConfig{}, reg, quiet); err == nil {
		t.Fatal("registering the metrics twice: got no error")
	}
}

// TestEdgeTimeouts: connections that send nothing, stop halfway through
// their headers, or idle after a response are closed after their timeout.
func TestEdgeTimeouts(t *testing.T) {
	const d = 200 * time.Millisecond
	_, addr := edgeServer(t, EdgeConfig{ReadHeaderTimeout: d, IdleTimeout: d}, ok)
	silent := dialFrom(t, "127.0.0.1", addr)
	partial := dialFrom(t, "127.0.0.1", addr)
	if _, err := io.WriteString(partial, "GET / HTTP/1.1\r\nHost: edge\r\n"); err != nil {
		t.Fatal(err)
	}
	idle := dialFrom(t, "127.0.0.1", addr)
	if got := get(t, idle, "/"); got != http.StatusOK {
		t.Fatalf("got %d, want 200", got)
	}
	for name, c := range map[string]net.Conn{"silent": silent, "partial headers": partial, "idle": idle} {
		t.Run(name, func(t *testing.T) { waitClosed(t, c, 5*time.Second) })
	}
}

// TestEdgeSlowBody: a body that trickles in is cut off once its grace has
// passed, and the client is told why.
func TestEdgeSlowBody(t *testing.T) {
	var handlerErr atomic.Value
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.ReadAll(r.Body); err != nil {
			handlerErr.Store(err)
			// What a gateway handler does with any body error.
			writeError(w, apierr.New(apierr.PayloadTooLarge, "body over the limit"))
			return
		}
		_, _ = io.WriteString(w, "ok")
	})
	_, addr := edgeServer(t, EdgeConfig{BodyTimeout: 200 * time.Millisecond}, h)
	c := dialFrom(t, "127.0.0.1", addr)
	if _, err := io.WriteString(c, "POST / HTTP/1.1\r\nHost: edge\r\nContent-Length: 1000\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	defer close(stop)
	go func() { // one byte every 20 ms: 50 bytes/s
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
				if _, err := c.Write([]byte{'x'}); err != nil {
					return
				}
			}
		}
	}()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	var e apierr.Error
	_ = json.NewDecoder(resp.Body).Decode(&e)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || e.Code != apierr.BadRequest || !strings.Contains(e.Message, "too slowly") || !resp.Close {
		t.Fatalf("got %d %+v (close %v), want 400 bad_request about a slow body, and Connection: close", resp.StatusCode, e, resp.Close)
	}
	if err, _ := handlerErr.Load().(error); err == nil {
		t.Fatal("the handler read the body without an error")
	}
	waitClosed(t, c, 5*time.Second)
}

// TestEdgeLongHandler: the edge's deadlines cover the client's sending and
// reading only. A handler that runs far past every timeout, as a long
// invocation does, keeps its context and answers, with and without a body.
func TestEdgeLongHandler(t *testing.T) {
	const d = 100 * time.Millisecond
	var cancelled atomic.Int32
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		select {
		case <-time.After(8 * d):
		case <-r.Context().Done():
			cancelled.Add(1)
		}
		_, _ = fmt.Fprintf(w, "%d", len(body))
	})
	_, addr := edgeServer(t, EdgeConfig{ReadHeaderTimeout: d, IdleTimeout: 4 * d, BodyTimeout: d, WriteTimeout: d}, h)
	c := &http.Client{Timeout: 10 * time.Second}
	for _, body := range []string{"", "some input"} {
		resp, err := c.Post("http://"+addr+"/", "text/plain", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || string(b) != fmt.Sprint(len(body)) {
			t.Fatalf("body %q: got %d %q, want 200 %d", body, resp.StatusCode, b, len(body))
		}
	}
	if n := cancelled.Load(); n != 0 {
		t.Fatalf("%d handlers saw their context cancelled", n)
	}
}

// TestEdgeSlowReader: a client that stops reading a large response loses
// its connection once the response's grace and allowance have passed.
func TestEdgeSlowReader(t *testing.T) {
	werr := make(chan error, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		chunk := make([]byte, 64<<10)
		for range 4096 { // 256 MiB, far more than the socket buffers hold
			if _, err := w.Write(chunk); err != nil {
				werr <- err
				return
			}
		}
		werr <- nil
	})
	// 64 MiB/s: the allowance for what the socket buffers absorb is small.
	_, addr := edgeServer(t, EdgeConfig{WriteTimeout: 200 * time.Millisecond, MinRate: 64 << 20}, h)
	c := dialFrom(t, "127.0.0.1", addr)
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: edge\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-werr:
		if err == nil {
			t.Fatal("the handler wrote 256 MiB to a client that reads nothing")
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the handler is still writing to a client that reads nothing")
	}
}

func TestAllowance(t *testing.T) {
	for _, tc := range []struct {
		n    int64
		rate int
		want time.Duration
	}{
		{0, 1024, 0},
		{1024, 1024, time.Second},
		{1536, 1024, 1500 * time.Millisecond},
		{64 << 20, 16 << 10, 4096 * time.Second},
		{1 << 50, 1 << 10, maxAllowance},
	} {
		if got := allowance(tc.n, tc.rate); got != tc.want {
			t.Errorf("allowance(%d, %d): got %s, want %s", tc.n, tc.rate, got, tc.want)
		}
	}
}
