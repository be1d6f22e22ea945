package gateway

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"time"

	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/async"
	"github.com/cloister-faas/cloister/internal/registry"
	"github.com/cloister-faas/cloister/internal/wire"
)

// OpenWhisk invocations: blocking or not, of functions and of
// gateway-run sequences.

// owParams merges the action's default parameters under the request's.
func owParams(body []byte, defaults []OWKeyValue) ([]byte, error) {
	params := map[string]json.RawMessage{}
	if len(strings.TrimSpace(string(body))) > 0 {
		if err := json.Unmarshal(body, &params); err != nil || params == nil {
			return nil, apierr.New(apierr.BadRequest, "The request content was malformed: parameters must be a JSON object")
		}
	}
	for _, kv := range defaults {
		if _, ok := params[kv.Key]; !ok {
			params[kv.Key] = kv.Value
		}
	}
	return json.Marshal(params)
}

func (g *Gateway) owInvoke(w http.ResponseWriter, r *http.Request, p *Principal) error {
	name, err := functionName(r)
	if err != nil {
		return err
	}
	blocking, err := owQueryBool(r, "blocking", false)
	if err != nil {
		return err
	}
	resultOnly, err := owQueryBool(r, "result", false)
	if err != nil {
		return err
	}
	st, err := g.svc.asyncQueue()
	if err != nil {
		return err
	}
	body, err := readInvokeBody(w, r)
	if err != nil {
		return err
	}
	ctx := r.Context()
	meta, err := g.owMetaFollowed(ctx, actionMetaKey(p.Namespace, name))
	if err != nil {
		return err
	}
	params, err := owParams(body, meta.Parameters)
	if err != nil {
		return err
	}
	var id string
	if seq, err := g.sequenceFollowed(ctx, p.Namespace, name); err == nil {
		if id, err = g.owStartSequence(ctx, st, seq, params); err != nil {
			return err
		}
	} else {
		rec, err := g.svc.lookup(ctx, p.Namespace, name, 0)
		if err != nil {
			return err
		}
		if err := requirePlain(rec, plainHintOpenWhisk); err != nil {
			return err
		}
		if blocking && r.Header.Get(HeaderIdempotencyKey) == "" && g.svc.callBudget(rec) <= owBlockingWait {
			a, err := g.owRunBlocking(ctx, st, rec, params)
			switch code := apierr.CodeOf(err); {
			case err == nil:
				return owAnswer(w, a, resultOnly)
			case code != apierr.ConcurrencyLimit && code != apierr.Overloaded:
				return err
			}
			// The worker had no room and nothing ran: the queue waits for
			// room, as it does for every queued invocation.
		}
		acc, err := g.svc.submit(ctx, "function",
			wire.InvokeRequest{Namespace: p.Namespace, Name: name, Version: rec.Function.Version, Mode: wire.ModePlain, Plain: params},
			r.Header.Get(HeaderIdempotencyKey))
		if err != nil {
			return err
		}
		id = acc.ActivationID
	}
	if !blocking {
		writeJSON(w, http.StatusAccepted, map[string]string{"activationId": id})
		return nil
	}
	wctx, cancel := context.WithTimeout(ctx, owBlockingWait)
	defer cancel()
	a, err := st.Wait(wctx, p.Namespace, id)
	if err != nil {
		return err
	}
	if !wire.FinalStatus(a.Status) {
		writeJSON(w, http.StatusAccepted, map[string]string{"activationId": id})
		return nil
	}
	return owAnswer(w, a, resultOnly)
}

// owAnswer answers a blocking invocation with its finished activation:
// 200, 502 for an application or developer error, 500 for a platform
// error; the whole activation, or its result only.
func owAnswer(w http.ResponseWriter, a *wire.Activation, resultOnly bool) error {
	status := http.StatusOK
	switch a.Status {
	case wire.StatusApplicationError, wire.StatusDeveloperError:
		status = http.StatusBadGateway
	case wire.StatusPlatformError:
		status = http.StatusInternalServerError
	}
	if resultOnly {
		writeJSON(w, status, owResult(a)) // no need for the rest of the record
		return nil
	}
	writeJSON(w, status, owActivation(a))
	return nil
}

// owRunBlocking runs a blocking invocation of rec on a worker at once, as
// the native API's plaintext invoke does, and records its activation,
// finished, in one write (docs/adr/0019-openwhisk-blocking-direct.md).
// It serves the blocking invocations the queue is not needed for: those
// without an idempotency key whose function finishes within the blocking
// wait. A failure to reach a worker is the caller's error, as on the
// native API, and nothing is recorded, since nothing ran (a worker with no
// room is not: owInvoke queues the invocation then). A failure to
// record the activation after the function ran is logged, and the caller
// still gets the result: the receipt, in the ledger, is what proves the
// run.
func (g *Gateway) owRunBlocking(ctx context.Context, st activationQueue, rec *registry.Record, params []byte) (*wire.Activation, error) {
	start := time.Now()
	req := &wire.InvokeRequest{Namespace: rec.Function.Namespace, Name: rec.Function.Name, Version: rec.Function.Version,
		Mode: wire.ModePlain, Plain: params, Logs: true}
	rep, err := g.svc.route(ctx, rec, req)
	if err != nil {
		return nil, err
	}
	end := time.Now()
	a := &wire.Activation{ActivationID: async.NewID(start), Namespace: req.Namespace, Name: req.Name, Version: rep.Version,
		Kind: "function", Mode: wire.ModePlain, Trust: wire.TrustGatewayTrusted, Submitted: async.Millis(start),
		Start: async.Millis(start), End: async.Millis(end), Response: async.Outcome(req, rep), Receipt: rep.Receipt, Attempts: 1}
	a.Duration = a.End - a.Start
	a.Status = a.Response.Status
	a.Logs = append([]string{async.LogLine(start, "run at once (blocking)")}, async.LogLines(rep.Logs)...)
	a.Logs = append(a.Logs, async.LogLine(end, "finished: %s", a.Status))
	if err := st.Record(context.WithoutCancel(ctx), a); err != nil {
		g.log.Warn("recording a blocking activation failed; the caller has its result", "namespace", a.Namespace,
			"function", a.Name, "activation", a.ActivationID, "err", err)
	}
	return a, nil
}

// owStartSequence records a sequence activation and runs its steps, one
// queued plaintext activation each, in the background. The gateway sees
// every intermediate result: this is the gateway-trusted counterpart of a
// sealed sequence, whose intermediate results stay in the worker.
func (g *Gateway) owStartSequence(ctx context.Context, st activationQueue, seq *wire.Sequence, params []byte) (string, error) {
	now := time.Now()
	a := &wire.Activation{ActivationID: async.NewID(now), Namespace: seq.Namespace, Name: seq.Name, Kind: "sequence",
		Mode: wire.ModePlain, Trust: wire.TrustGatewayTrusted, Status: wire.StatusRunning, Submitted: async.Millis(now),
		Start: async.Millis(now), Logs: []string{}}
	recs := make([]*registry.Record, len(seq.Steps))
	defaults := make([][]OWKeyValue, len(seq.Steps))
	for i, s := range seq.Steps {
		rec, err := g.svc.lookup(ctx, seq.Namespace, s.Name, s.Version)
		if err != nil {
			return "", err
		}
		if err := requirePlain(rec, plainHintOpenWhisk); err != nil {
			return "", err
		}
		recs[i] = rec
		meta, err := g.owMetaFollowed(ctx, actionMetaKey(seq.Namespace, s.Name))
		if err != nil {
			return "", err
		}
		defaults[i] = meta.Parameters
	}
	if err := st.Record(ctx, a); err != nil {
		return "", err
	}
	bg, cancel := context.WithTimeout(context.WithoutCancel(ctx), g.svc.callBudget(recs...))
	go func() {
		defer cancel()
		resp, steps := g.owRunSteps(bg, st, seq, recs, defaults, params)
		_, err := st.Update(context.WithoutCancel(bg), seq.Namespace, a.ActivationID, func(x *wire.Activation) error {
			end := time.Now()
			x.Logs = steps
			x.Response = resp
			x.Status = resp.Status
			x.End, x.Duration = async.Millis(end), async.Millis(end)-x.Start
			return nil
		})
		if err != nil {
			g.log.Error("finishing a sequence activation", "activation", a.ActivationID, "err", err)
		}
	}()
	return a.ActivationID, nil
}

// owRunSteps runs the steps and returns the sequence's response and its
// logs (the steps' activation ids, as OpenWhisk lists them). Each step's
// default parameters go under its input, as in OpenWhisk.
func (g *Gateway) owRunSteps(ctx context.Context, st activationQueue, seq *wire.Sequence, recs []*registry.Record, defaults [][]OWKeyValue, input []byte) (wire.ActivationResponse, []string) {
	logs := []string{}
	for i, rec := range recs {
		in, err := owParams(input, defaults[i])
		if err != nil {
			return failed(i+1, apierr.New(apierr.BadRequest, "the input of step %d (%s) is not a JSON object", i+1, rec.Function.Name)), logs
		}
		acc, err := g.svc.submit(ctx, "function",
			wire.InvokeRequest{Namespace: seq.Namespace, Name: rec.Function.Name, Version: rec.Function.Version, Mode: wire.ModePlain, Plain: in}, "")
		if err != nil {
			return failed(i+1, apierr.From(err)), logs
		}
		logs = append(logs, acc.ActivationID)
		a, err := st.Wait(ctx, seq.Namespace, acc.ActivationID)
		if err == nil && !wire.FinalStatus(a.Status) {
			err = apierr.New(apierr.Timeout, "step %d (%s) did not finish in time", i+1, rec.Function.Name)
		}
		if err != nil {
			return failed(i+1, apierr.From(err)), logs
		}
		if a.Status != wire.StatusSuccess {
			r := a.Response
			r.Step = i + 1
			if r.Error != nil {
				r.StepCode = r.Error.Code
			}
			return r, logs
		}
		input = a.Response.Result
	}
	return wire.ActivationResponse{Status: wire.StatusSuccess, Success: true, Result: input}, logs
}

func failed(step int, e *apierr.Error) wire.ActivationResponse {
	return wire.ActivationResponse{Status: wire.StatusPlatformError, Error: e, Step: step, StepCode: e.Code}
}
