package gateway

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"mime"
	"net/http"
	"slices"
	"strconv"

	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/wire"
)

// The native API's invocations: plaintext and sealed (HPKE, sessions),
// synchronous or queued.

func (g *Gateway) invoke(w http.ResponseWriter, r *http.Request, p *Principal) error {
	name, err := functionName(r)
	if err != nil {
		return err
	}
	v, err := queryVersion(r)
	if err != nil {
		return err
	}
	body, err := readInvokeBody(w, r)
	if err != nil {
		return err
	}
	if isAsync, err := queryAsync(r); err != nil {
		return err
	} else if isAsync {
		return g.invokeAsync(w, r, p, name, v, body)
	}
	if isSealed(r) {
		return g.sealed(w, r, p, name, v, body, wire.ModeHPKE, wire.ModeSession)
	}
	rec, err := g.svc.lookup(r.Context(), p.Namespace, name, v)
	if err != nil {
		return err
	}
	if err := requirePlain(rec, plainHintInvoke); err != nil {
		return err
	}
	rep, err := g.svc.route(r.Context(), rec, &wire.InvokeRequest{Namespace: p.Namespace, Name: name, Version: rec.Function.Version, Mode: wire.ModePlain, Plain: body})
	if err != nil {
		return err
	}
	if rep.Receipt != nil {
		rb, _ := json.Marshal(rep.Receipt) // a decoded receipt re-encodes
		w.Header().Set(HeaderReceipt, base64.StdEncoding.EncodeToString(rb))
	}
	w.Header().Set(HeaderVersion, strconv.Itoa(rep.Version))
	if rep.Error != nil {
		writeJSON(w, rep.Error.Code.Status(), wire.ErrorBody{Code: rep.Error.Code, Message: rep.Error.Message, Version: rep.Version, Receipt: rep.Receipt})
		return nil
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	_, _ = io.Copy(w, bytes.NewReader(rep.Output)) // the status is sent; the client is gone
	return nil
}

// readInvokeBody reads an invocation's body, up to MaxInvokeBytes.
func readInvokeBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxInvokeBytes))
	if err != nil {
		return nil, apierr.New(apierr.PayloadTooLarge, "request body over %d bytes", MaxInvokeBytes)
	}
	return body, nil
}

// maxSessionOpenBytes bounds a session-opening request.
const maxSessionOpenBytes = 64 << 10

func (g *Gateway) openSession(w http.ResponseWriter, r *http.Request, p *Principal) error {
	name, err := functionName(r)
	if err != nil {
		return err
	}
	v, err := queryVersion(r)
	if err != nil {
		return err
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxSessionOpenBytes))
	if err != nil {
		return apierr.New(apierr.PayloadTooLarge, "session request over %d KiB", maxSessionOpenBytes>>10)
	}
	return g.sealed(w, r, p, name, v, body, wire.ModeSessionOpen)
}

// parseSealed reads the routing fields of a sealed request: its mode, which
// must be one of modes, and its version, reconciled with the query's (v).
// The ciphertext stays as it is.
func parseSealed(body []byte, v int, modes ...string) (wire.SealedRequest, int, error) {
	var sr wire.SealedRequest
	if err := json.Unmarshal(body, &sr); err != nil {
		return sr, 0, apierr.New(apierr.BadRequest, "malformed sealed request: %v", err)
	}
	if !slices.Contains(modes, sr.Mode) {
		return sr, 0, apierr.New(apierr.BadRequest, "mode %q is not accepted here (want one of %v)", sr.Mode, modes)
	}
	v, err := sealedVersion(v, sr.Version)
	return sr, v, err
}

// sealed forwards a sealed request. The gateway reads only its routing
// fields; the ciphertext goes to the worker untouched.
func (g *Gateway) sealed(w http.ResponseWriter, r *http.Request, p *Principal, name string, v int, body []byte, modes ...string) error {
	sr, v, err := parseSealed(body, v, modes...)
	if err != nil {
		return err
	}
	logs := false
	if s := r.URL.Query().Get("logs"); s != "" {
		var err error
		if logs, err = strconv.ParseBool(s); err != nil {
			return apierr.New(apierr.BadRequest, "logs must be true or false")
		}
	}
	rec, err := g.svc.lookup(r.Context(), p.Namespace, name, v)
	if err != nil {
		return err
	}
	rep, err := g.svc.route(r.Context(), rec, &wire.InvokeRequest{Namespace: p.Namespace, Name: name, Version: rec.Function.Version, Mode: sr.Mode, Sealed: sr, Logs: logs})
	if err != nil {
		return err
	}
	if rep.Error != nil {
		writeJSON(w, rep.Error.Code.Status(), wire.ErrorBody{Code: rep.Error.Code, Message: rep.Error.Message, Version: rep.Version, Receipt: rep.Receipt, Logs: rep.Logs})
		return nil
	}
	writeJSON(w, http.StatusOK, wire.SealedResponse{Version: rep.Version, Ciphertext: rep.Ciphertext, Ticket: rep.Ticket,
		TicketExpires: rep.TicketExpires, Receipt: rep.Receipt, Logs: rep.Logs})
	return nil
}

// queryAsync reads ?async=true|false (also OpenWhisk's ?blocking=false).
func queryAsync(r *http.Request) (bool, error) {
	q := r.URL.Query()
	if s := q.Get("async"); s != "" {
		b, err := strconv.ParseBool(s)
		if err != nil {
			return false, apierr.New(apierr.BadRequest, "async must be true or false")
		}
		return b, nil
	}
	if s := q.Get("blocking"); s != "" {
		b, err := strconv.ParseBool(s)
		if err != nil {
			return false, apierr.New(apierr.BadRequest, "blocking must be true or false")
		}
		return !b, nil
	}
	return false, nil
}

// isSealed reports whether the request's Content-Type is the sealed one
// (one that does not parse is not).
func isSealed(r *http.Request) bool {
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")) // see above
	return mt == wire.SealedContentType
}

// invokeAsync queues an invocation and answers 202 with its activation id.
// A sealed body is queued as it is: the gateway reads only its routing fields.
func (g *Gateway) invokeAsync(w http.ResponseWriter, r *http.Request, p *Principal, name string, v int, body []byte) error {
	if _, err := g.svc.asyncQueue(); err != nil {
		return err
	}
	req := wire.InvokeRequest{Namespace: p.Namespace, Name: name, Mode: wire.ModePlain, Plain: body}
	if isSealed(r) {
		sr, sv, err := parseSealed(body, v, wire.ModeHPKE)
		if err != nil {
			return err
		}
		req.Mode, req.Sealed, req.Plain, v = wire.ModeHPKE, sr, nil, sv
	}
	rec, err := g.svc.lookup(r.Context(), p.Namespace, name, v)
	if err != nil {
		return err
	}
	if req.Mode == wire.ModePlain {
		if err := requirePlain(rec, plainHintAsync); err != nil {
			return err
		}
	}
	req.Version = rec.Function.Version
	acc, err := g.svc.submit(r.Context(), "function", req, r.Header.Get(HeaderIdempotencyKey))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusAccepted, acc)
	return nil
}
