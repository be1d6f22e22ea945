package gateway

// The HTTP edge: what stands between an unauthenticated client and the
// gateway's handlers. A connection costs a file descriptor, and the process
// shares its descriptors with NATS, the ledger and every tenant, so the edge
// bounds both how many connections it holds (LimitListener) and how long a
// slow client may keep one (NewServer). The values and their reasons are in
// docs/operations.md ("The HTTP edge").

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cloister-faas/cloister/internal/apierr"
)

// Defaults of EdgeConfig.
const (
	DefaultMaxConns          = 4096
	DefaultMaxConnsPerClient = 256
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultIdleTimeout       = 60 * time.Second
	DefaultBodyTimeout       = 30 * time.Second
	DefaultWriteTimeout      = 30 * time.Second
	DefaultMinRate           = 16 << 10 // bytes per second
)

// EdgeConfig bounds the connections of the HTTP edge. The zero value means
// every default. A zero field takes its default; a negative cap or timeout
// turns that limit off, which is only for tests and for a gateway behind a
// proxy that enforces the limit instead.
type EdgeConfig struct {
	// MaxConns caps the open connections (default 4096). Keep it well below
	// the process's file-descriptor limit (ulimit -n), which NATS and the
	// ledger share.
	MaxConns int
	// MaxConnsPerClient caps the open connections from one client address:
	// an IPv4 address, or an IPv6 /64, since one host is handed a whole /64
	// (default 256). Behind a reverse proxy every client has the proxy's
	// address: raise this, or turn it off and cap at the proxy.
	MaxConnsPerClient int
	// ReadHeaderTimeout is how long a client has to send a request's
	// headers, counted from the first byte (default 10 s); a new connection
	// that sends nothing is closed after it too.
	ReadHeaderTimeout time.Duration
	// IdleTimeout is how long a keep-alive connection may wait for its next
	// request (default 60 s).
	IdleTimeout time.Duration
	// BodyTimeout is the time a request body gets before MinRate applies:
	// the body's first n bytes must have arrived BodyTimeout + n/MinRate
	// after the request's headers (default 30 s).
	BodyTimeout time.Duration
	// WriteTimeout is the same for a response, counted from its first
	// write: the client must have taken n bytes by WriteTimeout + n/MinRate
	// (default 30 s). The handler's own running time, such as a long
	// invocation, is not counted.
	WriteTimeout time.Duration
	// MinRate is the slowest a body or a response may travel once its
	// timeout has passed, in bytes per second (default 16 KiB/s; a
	// negative value also means the default).
	MinRate int
}

// withDefaults fills in the zero fields.
func (c EdgeConfig) withDefaults() EdgeConfig {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	defDur := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	def(&c.MaxConns, DefaultMaxConns)
	def(&c.MaxConnsPerClient, DefaultMaxConnsPerClient)
	if c.MinRate <= 0 {
		c.MinRate = DefaultMinRate
	}
	defDur(&c.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	defDur(&c.IdleTimeout, DefaultIdleTimeout)
	defDur(&c.BodyTimeout, DefaultBodyTimeout)
	defDur(&c.WriteTimeout, DefaultWriteTimeout)
	return c
}

// Refusal reasons, the values of the reason label of
// cloister_http_connections_refused_total.
const (
	RefusedTotal     = "total"
	RefusedPerClient = "per_client"
)

// maxRefusing bounds the connections being answered with a refusal at
// once; beyond it a connection over the cap is closed without an answer.
const maxRefusing = 64

// refuseLinger is how long a refused connection may take to read its answer.
const refuseLinger = time.Second

// LimitListener is a net.Listener that caps the open connections, in total
// and per client address. A connection over a cap is answered at once with
// "503 overloaded" and closed, so that the client learns why instead of
// hanging in the kernel's accept queue; Accept then waits for the next one.
// The handler never sees a refused connection, and nothing the client sent
// on it is parsed.
type LimitListener struct {
	net.Listener
	total, perClient int
	log              *slog.Logger

	refused  *prometheus.CounterVec
	open     prometheus.Gauge
	answer   map[string][]byte // the 503 response by reason
	refusing chan struct{}
	lastLog  atomic.Int64 // unix nanoseconds of the last refusal logged

	mu       sync.Mutex
	n        int
	byClient map[netip.Addr]int
}

// NewLimitListener wraps ln with the caps of c. It registers the
// connection metrics with reg, if not nil.
func NewLimitListener(ln net.Listener, c EdgeConfig, reg prometheus.Registerer, log *slog.Logger) (*LimitListener, error) {
	c = c.withDefaults()
	if log == nil {
		log = slog.Default()
	}
	l := &LimitListener{
		Listener: ln, total: c.MaxConns, perClient: c.MaxConnsPerClient, log: log.WithGroup("edge"),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cloister_http_connections_refused_total",
			Help: "HTTP connections refused at accept because a connection cap was reached, by cap (total or per_client).",
		}, []string{"reason"}),
		open: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cloister_http_connections_open", Help: "HTTP connections open (accepted and not yet closed).",
		}),
		answer: map[string][]byte{
			RefusedTotal: refusal(apierr.New(apierr.Overloaded,
				"the gateway holds its maximum of %d connections; try again later", c.MaxConns)),
			RefusedPerClient: refusal(apierr.New(apierr.Overloaded,
				"too many connections from your address (at most %d); close idle ones or try again later", c.MaxConnsPerClient)),
		},
		refusing: make(chan struct{}, maxRefusing),
		byClient: map[netip.Addr]int{},
	}
	l.refused.WithLabelValues(RefusedTotal)
	l.refused.WithLabelValues(RefusedPerClient)
	if reg != nil {
		if err := reg.Register(l.refused); err != nil {
			return nil, fmt.Errorf("registering edge metrics: %w", err)
		}
		if err := reg.Register(l.open); err != nil {
			reg.Unregister(l.refused)
			return nil, fmt.Errorf("registering edge metrics: %w", err)
		}
	}
	return l, nil
}

// refusal is the whole HTTP response that refuses a connection.
func refusal(e *apierr.Error) []byte {
	body, _ := json.Marshal(e) // a code and a message: Marshal cannot fail
	return fmt.Appendf(nil, "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"+
		"Retry-After: 1\r\nConnection: close\r\n\r\n%s", e.Code.Status(), http.StatusText(e.Code.Status()), len(body), body)
}

// Accept returns the next connection within the caps, refusing the others.
func (l *LimitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		key := clientKey(c.RemoteAddr())
		if reason := l.admit(key); reason != "" {
			l.refuse(c, key, reason)
			continue
		}
		return &limitedConn{Conn: c, l: l, key: key}, nil
	}
}

// admit counts a new connection from key, or returns why it may not open.
func (l *LimitListener) admit(key netip.Addr) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.total > 0 && l.n >= l.total:
		return RefusedTotal
	case l.perClient > 0 && l.byClient[key] >= l.perClient:
		return RefusedPerClient
	}
	l.n++
	l.byClient[key]++
	l.open.Set(float64(l.n))
	return ""
}

// release uncounts a closed connection.
func (l *LimitListener) release(key netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.n--
	if l.byClient[key]--; l.byClient[key] <= 0 {
		delete(l.byClient, key)
	}
	l.open.Set(float64(l.n))
}

// Open returns the number of open connections, in total and from the
// client address of addr.
func (l *LimitListener) Open(addr net.Addr) (total, client int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n, l.byClient[clientKey(addr)]
}

// refuse answers c with 503 and closes it, without blocking Accept: the
// answer is written, the write side shut, and whatever the client sent is
// read and dropped (up to refuseLinger), so that the close does not reset
// the connection before the client has read the answer. Beyond maxRefusing
// refusals at once, c is closed at once.
func (l *LimitListener) refuse(c net.Conn, key netip.Addr, reason string) {
	l.refused.WithLabelValues(reason).Inc()
	if now, last := time.Now().UnixNano(), l.lastLog.Load(); now-last > int64(10*time.Second) && l.lastLog.CompareAndSwap(last, now) {
		l.log.Warn("refusing HTTP connections over the cap (logged at most every 10 s)", "reason", reason, "client", key.String())
	}
	select {
	case l.refusing <- struct{}{}:
	default:
		_ = c.Close() // refused: a failed close leaves nothing to do
		return
	}
	go func() {
		defer func() { <-l.refusing }()
		// The connection is refused and closed below: each failure here
		// only ends the courtesy sooner. SetDeadline fails only once it is
		// closed, and then the Write fails too.
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(refuseLinger)) // see above
		if _, err := c.Write(l.answer[reason]); err != nil {
			return
		}
		if cw, ok := c.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite() // see above
		}
		_, _ = io.CopyN(io.Discard, c, 64<<10) // see above
	}()
}

// clientKey is the address a connection counts against: its IPv4 address,
// or the /64 of its IPv6 address. Connections without an IP address share
// the zero key.
func clientKey(a net.Addr) netip.Addr {
	var ap netip.AddrPort
	if ta, ok := a.(*net.TCPAddr); ok {
		ap = ta.AddrPort()
	} else if a != nil {
		// An address that does not parse counts against the zero key.
		ap, _ = netip.ParseAddrPort(a.String())
	}
	ip := ap.Addr().Unmap().WithZone("")
	if ip.Is6() {
		p, _ := ip.Prefix(64) // cannot fail: 64 bits of an IPv6 address
		ip = p.Addr()
	}
	return ip
}

// limitedConn uncounts itself when closed.
type limitedConn struct {
	net.Conn
	l    *LimitListener
	key  netip.Addr
	once sync.Once
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.release(c.key) })
	return err
}

// CloseWrite lets the HTTP server shut the write side before closing, as
// it does to deliver a response before an unread request body.
func (c *limitedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

// NewServer returns the HTTP server of the edge for h. It sets the header
// and idle timeouts of c, and bounds each request body and response by
// c's BodyTimeout, WriteTimeout and MinRate (see EdgeConfig).
//
// It sets neither http.Server.ReadTimeout nor WriteTimeout, on purpose.
// WriteTimeout runs from the end of the request's headers to the end of the
// response, so it would cut off a synchronous invocation, which may
// legitimately run for the function's timeout (up to bundle.MaxTimeoutMS)
// plus routing slack. ReadTimeout is one fixed bound for headers and body:
// long enough for a 64 MiB bundle on a slow link, it would let a client
// that sends nothing hold a connection just as long. The edge's deadlines
// grow with the bytes that actually travel, and run only while the client
// is sending its body or reading the response.
func NewServer(h http.Handler, c EdgeConfig, log *slog.Logger) *http.Server {
	c = c.withDefaults()
	if log == nil {
		log = slog.Default()
	}
	return &http.Server{
		Handler:           deadlines(h, c),
		ReadHeaderTimeout: c.ReadHeaderTimeout,
		IdleTimeout:       c.IdleTimeout,
		ErrorLog:          slog.NewLogLogger(log.WithGroup("edge").Handler(), slog.LevelWarn),
	}
}

// deadlines wraps h so that a request's body must keep arriving, and its
// response keep being read, at c.MinRate after their grace time.
func deadlines(h http.Handler, c EdgeConfig) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		ew := &edgeWriter{ResponseWriter: w, rc: rc, grace: c.WriteTimeout, rate: c.MinRate}
		if r.ContentLength != 0 && r.Body != nil && r.Body != http.NoBody && c.BodyTimeout > 0 {
			b := &edgeBody{ReadCloser: r.Body, rc: rc, start: time.Now(), grace: c.BodyTimeout, rate: c.MinRate}
			if err := rc.SetReadDeadline(b.deadline()); err == nil {
				r.Body, ew.body = b, b
			}
		}
		h.ServeHTTP(ew, r)
		if c.WriteTimeout > 0 {
			// What the handler left in the server's buffers is written
			// after it returns. (net/http's writer takes deadlines; it
			// fails only on a closed connection, with nothing to bound.)
			_ = rc.SetWriteDeadline(time.Now().Add(c.WriteTimeout))
		}
	})
}

// maxAllowance bounds allowance, so that deadlines never overflow.
const maxAllowance = 1000 * time.Hour

// allowance is how long n bytes may take at rate bytes per second.
func allowance(n int64, rate int) time.Duration {
	r := int64(rate)
	if n/r >= int64(maxAllowance/time.Second) {
		return maxAllowance
	}
	return time.Duration(n/r)*time.Second + time.Duration(n%r)*time.Second/time.Duration(r)
}

// edgeBody is a request body whose connection read deadline moves with
// the bytes received. (Once the body has ended, the server clears the
// deadline itself before it watches the connection in the background.)
type edgeBody struct {
	io.ReadCloser
	rc       *http.ResponseController
	start    time.Time
	grace    time.Duration
	rate     int
	n        int64
	timedOut atomic.Bool
}

func (b *edgeBody) deadline() time.Time { return b.start.Add(b.grace + allowance(b.n, b.rate)) }

func (b *edgeBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n += int64(n)
	var ne net.Error
	switch {
	case err == nil:
		// As in deadlines: fails only on a closed connection.
		_ = b.rc.SetReadDeadline(b.deadline())
	case errors.As(err, &ne) && ne.Timeout():
		b.timedOut.Store(true)
	}
	return n, err
}

// edgeWriter moves the connection's write deadline with the bytes written,
// from the first write on. If the request body ran out of time before the
// handler answered, it answers for the handler: 400 bad_request, saying so.
type edgeWriter struct {
	http.ResponseWriter
	rc    *http.ResponseController
	grace time.Duration
	rate  int
	start time.Time
	n     int64
	body  *edgeBody
	// answered: the handler's response has begun; replaced: the edge's
	// answer to a slow body was sent instead, and the handler's is dropped.
	answered, replaced bool
}

func (w *edgeWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *edgeWriter) extend(k int) {
	if w.grace <= 0 {
		return
	}
	if w.start.IsZero() {
		w.start = time.Now()
	}
	w.n += int64(k)
	// As in deadlines: fails only on a closed connection.
	_ = w.rc.SetWriteDeadline(w.start.Add(w.grace + allowance(w.n, w.rate)))
}

// slowBody reports whether the edge answers instead of the handler,
// sending that answer on the first call that finds the body timed out.
func (w *edgeWriter) slowBody() bool {
	if w.replaced {
		return true
	}
	if w.answered || w.body == nil || !w.body.timedOut.Load() {
		w.answered = true
		return false
	}
	w.replaced = true
	e := apierr.New(apierr.BadRequest, "the request body arrived too slowly: after %s it must keep coming at %d bytes/s or more",
		w.body.grace, w.body.rate)
	b, _ := json.Marshal(e) // a code and a message: Marshal cannot fail
	h := w.ResponseWriter.Header()
	clear(h)
	h.Set("Content-Type", "application/json")
	h.Set("Connection", "close")
	w.ResponseWriter.WriteHeader(e.Code.Status())
	w.extend(len(b))
	_, _ = w.ResponseWriter.Write(b) // the status is sent; a failure means the client is gone
	return true
}

func (w *edgeWriter) WriteHeader(code int) {
	if code >= 200 && w.slowBody() {
		return
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *edgeWriter) Write(p []byte) (int, error) {
	if w.slowBody() {
		return len(p), nil
	}
	w.extend(len(p))
	return w.ResponseWriter.Write(p)
}

// Flush sends what is buffered, under the write deadline.
func (w *edgeWriter) Flush() {
	if w.slowBody() {
		return
	}
	w.extend(0)
	_ = w.rc.Flush() // http.Flusher has no error to return; the next Write reports it
}
