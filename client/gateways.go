package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/wire"
)

// ErrOutcomeUnknown is wrapped in the error of a request that is not
// idempotent (a synchronous invocation, a deploy, a POST without an
// Idempotency-Key, a PUT or a DELETE) when it reached a gateway and no
// answer came back: it may or may not have taken effect. The client does
// not send it again. The error's message says how to find out; for an
// invocation, the receipt of a call that ran is in the ledger under the
// request's request_sha256.
var ErrOutcomeUnknown = errors.New("cloister: outcome unknown")

// maxAnswer bounds the body read from a gateway.
const maxAnswer = 64 << 20

// failoverWindow bounds the time in which a call fails over: once it has
// passed since the call's first attempt, no other gateway is tried.
const failoverWindow = time.Minute

// WithLogger sets the logger to which the client reports, at debug level,
// which gateway answered a request and why it failed over to another. It
// logs methods, paths and gateway URLs, never keys, inputs or outputs.
func WithLogger(l *slog.Logger) Option { return func(c *Client) { c.log = l } }

// parseGateways splits a comma-separated list of gateway base URLs and
// validates each.
func parseGateways(list string) ([]string, error) {
	var gws []string
	for _, s := range strings.Split(list, ",") {
		s = strings.TrimSpace(s)
		u, err := url.Parse(s)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("invalid gateway URL %q", s)
		}
		if s = strings.TrimRight(s, "/"); !slices.Contains(gws, s) {
			gws = append(gws, s)
		}
	}
	return gws, nil
}

// answer is a gateway's HTTP answer, read in full.
type answer struct {
	status  int
	header  http.Header
	body    []byte
	gateway string
}

// idempotent reports whether a request may be sent again after a failure
// that left its outcome unknown.
func idempotent(method string, hdr http.Header) bool {
	return method == http.MethodGet || method == http.MethodHead || hdr.Get("Idempotency-Key") != ""
}

// nothingRan reports whether an answer's code says the platform ran
// nothing (docs/api.md, Errors): another gateway may succeed.
func nothingRan(code apierr.Code) bool {
	return code == apierr.Unavailable || code == apierr.NoWorker || code == apierr.Overloaded
}

// errorCode is the Cloister error code of an answer's body, "" if it has none.
func errorCode(b []byte) apierr.Code {
	var e wire.ErrorBody
	if json.Unmarshal(b, &e) != nil {
		return ""
	}
	return e.Code
}

func gatewayFailure(status int) bool {
	return status == http.StatusBadGateway || status == http.StatusServiceUnavailable || status == http.StatusGatewayTimeout
}

// exchange sends a request to the gateway that answered last and fails
// over to the next ones, each tried at most once and none after
// failoverWindow:
//
//   - on a connection that could not be made (refused, unreachable, a
//     failed TLS handshake): nothing was sent;
//   - on a 502, 503 or 504 whose code says nothing ran (unavailable,
//     no_worker, overloaded);
//   - for an idempotent request, on any other transport failure and any
//     other 502, 503 or 504.
//
// A request that is not idempotent and reached a gateway without a
// Cloister answer (the connection dropped, a timeout, a proxy's 502) fails
// with ErrOutcomeUnknown and is not sent again. Answers are returned as
// they are, whatever their status; the error is for no answer.
func (c *Client) exchange(ctx context.Context, method, path string, body []byte, hdr http.Header) (*answer, error) {
	idem := idempotent(method, hdr)
	n := len(c.gws)
	first := int(c.cur.Load())
	began := time.Now()
	var last *answer
	var errs []error
	for i := 0; i < n; i++ {
		if i > 0 && (ctx.Err() != nil || time.Since(began) > failoverWindow) {
			break
		}
		gi := (first + i) % n
		gw := c.gws[gi]
		a, sent, err := c.attempt(ctx, gw, method, path, body, hdr)
		if err != nil {
			if sent && !idem {
				return nil, outcomeUnknown(method, path, gw, err)
			}
			c.debug("gateway failed", "gateway", gw, "method", method, "path", path, "err", err)
			errs = append(errs, err)
			continue
		}
		last = a
		if gatewayFailure(a.status) {
			code := errorCode(a.body)
			if nothingRan(code) || idem {
				c.debug("gateway refused", "gateway", gw, "method", method, "path", path, "status", a.status, "code", code)
				continue
			}
			if code == "" {
				// Not a Cloister answer: a proxy's, which does not say
				// whether the gateway behind it ran the request.
				c.cur.Store(int64(gi))
				return nil, outcomeUnknown(method, path, gw, publicError(decodeError(a.status, a.body)))
			}
		}
		c.cur.Store(int64(gi))
		c.debug("gateway answered", "gateway", gw, "method", method, "path", path, "status", a.status)
		return a, nil
	}
	if last != nil {
		// Every gateway failed and one of them answered: its answer says most.
		for gi, gw := range c.gws {
			if gw == last.gateway {
				c.cur.Store(int64(gi))
			}
		}
		return last, nil
	}
	if len(errs) == 1 {
		return nil, fmt.Errorf("reaching gateway: %w", errs[0])
	}
	format := "reaching gateways (%d tried): " + strings.TrimSuffix(strings.Repeat("%w; ", len(errs)), "; ")
	return nil, fmt.Errorf(format, append([]any{len(errs)}, anys(errs)...)...)
}

// attempt sends a request to one gateway. sent is false only when the
// request provably did not leave the client: no connection was made.
func (c *Client) attempt(ctx context.Context, gw, method, path string, body []byte, hdr http.Header) (a *answer, sent bool, err error) {
	var connected, handshakeFailed atomic.Bool
	trace := &httptrace.ClientTrace{
		GotConn: func(httptrace.GotConnInfo) { connected.Store(true) },
		TLSHandshakeDone: func(_ tls.ConnectionState, err error) {
			if err != nil {
				handshakeFailed.Store(true)
			}
		},
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), method, gw+path, rd)
	if err != nil {
		return nil, false, err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		var oe *net.OpError
		notSent := !connected.Load() && (handshakeFailed.Load() || (errors.As(err, &oe) && oe.Op == "dial"))
		return nil, !notSent, err
	}
	defer resp.Body.Close() // read here: the close has nothing to report
	b, err := readAnswer(resp.Body, resp.ContentLength)
	if err != nil {
		return nil, true, fmt.Errorf("reading the answer of %s: %w", gw, err)
	}
	return &answer{status: resp.StatusCode, header: resp.Header, body: b, gateway: gw}, true, nil
}

func anys(errs []error) []any {
	out := make([]any, len(errs))
	for i, e := range errs {
		out[i] = e
	}
	return out
}

func outcomeUnknown(method, path, gw string, err error) error {
	return fmt.Errorf("%w: %s %s reached the gateway %s and got no answer, so it may or may not have run; it was not sent again: %w",
		ErrOutcomeUnknown, method, strings.SplitN(path, "?", 2)[0], gw, err)
}

func (c *Client) debug(msg string, args ...any) {
	if c.log != nil {
		c.log.Debug(msg, args...)
	}
}

// gatewayTransport serves the ledger reader's GET requests through
// exchange, so that they fail over too. Requests are addressed under root,
// the ledger's URL on the first gateway; the part after it is kept.
type gatewayTransport struct {
	c    *Client
	root string // ends in ledgerPath
}

const ledgerPath = "/v1/ledger/log/"

func (t gatewayTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil {
		_ = r.Body.Close() // a ledger read sends no body; RoundTrip must close it all the same
	}
	rest, ok := strings.CutPrefix(r.URL.String(), t.root)
	if !ok || r.Method != http.MethodGet {
		return nil, fmt.Errorf("client: %s %s is not a ledger read", r.Method, r.URL.Redacted())
	}
	a, err := t.c.exchange(r.Context(), http.MethodGet, ledgerPath+rest, nil, nil)
	if err != nil {
		return nil, err
	}
	return &http.Response{Status: fmt.Sprintf("%d %s", a.status, http.StatusText(a.status)), StatusCode: a.status,
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, Header: a.header, Body: io.NopCloser(bytes.NewReader(a.body)),
		ContentLength: int64(len(a.body)), Request: r}, nil
}

// readAnswer reads an answer's body, at most maxAnswer bytes of it. When
// the gateway sent its length, the body is read into a buffer of that size
// at once, not grown as io.ReadAll grows it (net/http ends the body at that
// length, or fails it short).
func readAnswer(body io.Reader, length int64) ([]byte, error) {
	if length < 0 || length > maxAnswer {
		return io.ReadAll(io.LimitReader(body, maxAnswer))
	}
	b := make([]byte, length)
	if _, err := io.ReadFull(body, b); err != nil {
		return nil, err
	}
	return b, nil
}
