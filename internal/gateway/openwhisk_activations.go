package gateway

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"

	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/async"
	"github.com/cloister-faas/cloister/internal/wire"
)

// OpenWhisk activations: Cloister's activations in OpenWhisk's shape.

var owStatus = map[string]struct {
	name string
	code int
}{
	wire.StatusSuccess:          {"success", 0},
	wire.StatusApplicationError: {"application error", 1},
	wire.StatusDeveloperError:   {"action developer error", 2},
	wire.StatusPlatformError:    {"whisk internal error", 3},
}

// owResult is an activation's result as a JSON object: a plaintext output
// that is a JSON object as it is, other output under "output", an error
// as {"error": message}, and a sealed result as {} (annotated "sealed").
func owResult(a *wire.Activation) json.RawMessage {
	resp := a.Response
	switch {
	case resp.Sealed:
		return json.RawMessage("{}")
	case resp.Error != nil:
		b, _ := json.Marshal(map[string]any{"error": resp.Error.Message, "code": resp.Error.Code}) // two strings
		return b
	case len(resp.Result) == 0:
		return json.RawMessage("{}")
	}
	// Valid JSON that starts with "{" is an object: checked without
	// decoding it (every blocking call with result=true answers this).
	valid := json.Valid(resp.Result)
	if t := bytes.TrimLeft(resp.Result, " \t\r\n"); valid && t[0] == '{' {
		return resp.Result
	}
	var out any = string(resp.Result)
	if valid {
		out = json.RawMessage(resp.Result)
	}
	b, _ := json.Marshal(map[string]any{"output": out}) // a string, or JSON checked by json.Valid
	return b
}

func owActivation(a *wire.Activation) *OWActivation {
	s := owStatus[a.Status]
	o := &OWActivation{
		Namespace: a.Namespace, Name: a.Name, Version: owVersion(max(a.Version, 1)), Subject: a.Namespace,
		ActivationID: a.ActivationID, Start: a.Start, End: a.End, Duration: a.Duration, StatusCode: s.code,
		Response: OWResponse{Status: s.name, StatusCode: s.code, Success: a.Status == wire.StatusSuccess, Result: owResult(a)},
		Logs:     a.Logs,
	}
	if o.Logs == nil {
		o.Logs = []string{}
	}
	trust := a.Trust
	if trust == "" {
		trust = "confidential"
	}
	o.Annotations = []OWKeyValue{
		{Key: "path", Value: jsonString(a.Namespace + "/" + a.Name)},
		{Key: "kind", Value: jsonString(a.Kind)},
		{Key: "trust", Value: jsonString(trust)},
		{Key: "cloister-mode", Value: jsonString(a.Mode)},
	}
	if a.Start != 0 {
		o.Annotations = append(o.Annotations, OWKeyValue{Key: "waitTime", Value: jsonString(strconv.FormatInt(a.Start-a.Submitted, 10))})
	}
	if a.Response.Sealed {
		o.Annotations = append(o.Annotations, OWKeyValue{Key: "sealed", Value: json.RawMessage("true")})
	}
	if a.Trigger != "" {
		o.Annotations = append(o.Annotations, OWKeyValue{Key: "cause", Value: jsonString(a.Trigger + "/" + a.Rule)})
	}
	// Receipts decoded from the record re-encode: Marshal cannot fail.
	if a.Receipt != nil {
		b, _ := json.Marshal(a.Receipt) // see above
		o.Annotations = append(o.Annotations, OWKeyValue{Key: "cloister-receipt", Value: b})
	}
	if len(a.Receipts) > 0 {
		b, _ := json.Marshal(a.Receipts) // see above
		o.Annotations = append(o.Annotations, OWKeyValue{Key: "cloister-receipts", Value: b})
	}
	return o
}

func (g *Gateway) owListActivations(w http.ResponseWriter, r *http.Request, p *Principal) error {
	st, err := g.svc.asyncQueue()
	if err != nil {
		return err
	}
	pg, err := owListPage(r, "activations")
	if err != nil {
		return err
	}
	if pg.count {
		return apierr.New(apierr.BadRequest, "count is not supported for activations")
	}
	// As in OpenWhisk, an activation is listed once it has finished; skip
	// counts finished activations only.
	o := async.ListOptions{Limit: pg.limit, Skip: pg.skip, Keep: func(a *wire.Activation) bool { return wire.FinalStatus(a.Status) }}
	if n := r.URL.Query().Get("name"); n != "" {
		if o.Name, err = owName(p.Namespace, n); err != nil {
			return err
		}
	}
	list, err := st.List(r.Context(), p.Namespace, o)
	if err != nil {
		return err
	}
	out := []*OWActivation{}
	for _, a := range list {
		out = append(out, owActivation(a))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// owFinished returns a final activation; an unfinished one is not found
// yet, as in OpenWhisk, where records appear when they complete.
func (g *Gateway) owFinished(r *http.Request, p *Principal) (*wire.Activation, error) {
	a, err := g.activation(r, p)
	if err != nil {
		return nil, err
	}
	if !wire.FinalStatus(a.Status) {
		return nil, apierr.New(apierr.NotFound, "The requested resource does not exist (activation %s is %s; ask again later).", a.ActivationID, a.Status)
	}
	return a, nil
}

func (g *Gateway) owGetActivation(w http.ResponseWriter, r *http.Request, p *Principal) error {
	a, err := g.owFinished(r, p)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, owActivation(a))
	return nil
}

func (g *Gateway) owActivationPart(w http.ResponseWriter, r *http.Request, p *Principal) error {
	a, err := g.owFinished(r, p)
	if err != nil {
		return err
	}
	o := owActivation(a)
	if strings.HasSuffix(r.URL.Path, "/logs") {
		writeJSON(w, http.StatusOK, map[string]any{"logs": o.Logs})
		return nil
	}
	writeJSON(w, http.StatusOK, o.Response)
	return nil
}
