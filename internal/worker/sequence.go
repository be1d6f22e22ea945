package worker

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/bundle"
	"github.com/cloister-faas/cloister/internal/certs"
	"github.com/cloister-faas/cloister/internal/receipt"
	"github.com/cloister-faas/cloister/internal/sandbox"
	"github.com/cloister-faas/cloister/internal/seal"
	"github.com/cloister-faas/cloister/internal/wire"
)

// MaxSequenceSteps bounds the steps of a sequence.
const MaxSequenceSteps = 16

// invokeSequence runs a sequence inside this worker: it opens the request
// with the first step's key under an info that binds every step, runs the
// steps one after the other with each output as the next input (the
// plaintext never leaves the worker), signs one receipt per step that names
// the previous receipt, and seals the last output to the caller.
func (w *Worker) invokeSequence(ctx context.Context, req *wire.InvokeRequest) (*wire.InvokeReply, error) {
	s := req.Sealed
	if !bundle.ValidName(req.Name) {
		return nil, apierr.New(apierr.BadRequest, "invalid sequence name")
	}
	if len(s.Steps) == 0 || len(s.Steps) > MaxSequenceSteps {
		return nil, apierr.New(apierr.BadRequest, "a sequence has 1 to %d steps, not %d", MaxSequenceSteps, len(s.Steps))
	}
	fns := make([]*loaded, len(s.Steps))
	info := make([]seal.SequenceStep, len(s.Steps))
	for i, st := range s.Steps {
		if st.Version < 1 {
			return nil, apierr.New(apierr.BadRequest, "step %d does not name a resolved version", i+1)
		}
		fn, err := w.function(ctx, req.Namespace, st.Name, st.Version)
		if err != nil {
			return nil, err
		}
		if fn.fn.CodeHash != st.CodeHash {
			return nil, apierr.New(apierr.DecryptFailed, "step %d (%s v%d) runs other code than the request was sealed for", i+1, st.Name, st.Version)
		}
		fns[i] = fn
		info[i] = seal.SequenceStep{Name: fn.fn.Name, Version: fn.fn.Version, CodeHash: fn.fn.CodeHash}
	}
	seqInfo := seal.SequenceInfo(req.Activation != "", req.Namespace, req.Name, info)
	sc, err := seal.OpenRequest(fns[0].key, seqInfo, s.Enc, s.Ciphertext, false)
	if err != nil {
		return nil, apierr.Wrap(apierr.DecryptFailed, err)
	}
	p, err := w.checkPayload(ctx, fns[0], sc.Payload, req.Activation, seqInfo, s.Enc)
	if err != nil {
		return nil, err
	}
	reqHash := seal.RequestHash(wire.ModeSequence, s.Enc, nil, s.Ciphertext)
	// The caller must be allowed to invoke every step: a sequence is no
	// way around a step's policy. The first step that refuses ends the
	// chain before anything runs, with its refusal's receipt.
	for i, fn := range fns {
		if err := authorise(fn, p.Caller); err != nil {
			op := &opened{input: p.Input, reqHash: reqHash, caller: p.Caller}
			rep, rerr := w.refuse(fn, wire.ModeSequence, op, err, req.Name, i+1)
			if rerr != nil {
				return nil, rerr
			}
			rep.Step, rep.StepCode = i+1, apierr.CallerNotAuthorised
			rep.Receipts = []*receipt.Signed{rep.Receipt}
			return rep, nil
		}
	}
	rep := &wire.InvokeReply{}
	var logs bytes.Buffer
	input, link, prev := p.Input, reqHash, ""
	for i, fn := range fns {
		step := i + 1
		id := newInvocationID(w.now())
		res, runErr := w.runStep(ctx, fn, input, step, id)
		if errors.Is(runErr, errNotRun) && apierr.CodeOf(runErr) == apierr.PayloadTooLarge {
			// The previous output is too big for this step, which did not
			// run: the chain ends with the previous receipt.
			ae := apierr.From(runErr)
			rep.Error = apierr.New(apierr.SequenceStepFailed, "step %d (%s v%d) failed: %s: %s", step, fn.fn.Name, fn.fn.Version, ae.Code, ae.Message)
			rep.Step, rep.StepCode = step, ae.Code
			break
		}
		if errors.Is(runErr, errNotRun) {
			return nil, apierr.From(runErr)
		}
		if errors.Is(runErr, sandbox.ErrBusy) {
			return nil, sandboxError(runErr)
		}
		status, body := "ok", []byte(nil)
		var respHash string
		if runErr != nil {
			ae := apierr.From(sandboxError(runErr))
			if ae.Code == apierr.Unavailable {
				// As in invoke: the step started, so not "nothing ran".
				ae = apierr.New(apierr.Interrupted, "step %d started and then failed: %s", step, ae.Message)
			}
			if ae.Code == apierr.Internal || ae.Code == apierr.Interrupted {
				w.log.Error("sequence step failed to run", "sequence", req.Name, "step", step, "err", runErr)
				return nil, ae
			}
			status = string(ae.Code)
			respHash = seal.SHA256Hex(nil)
			rep.Error = apierr.New(apierr.SequenceStepFailed, "step %d (%s v%d) failed: %s: %s", step, fn.fn.Name, fn.fn.Version, ae.Code, ae.Message)
			rep.Step, rep.StepCode = step, ae.Code
		} else if step == len(fns) {
			if body, err = seal.SealSymmetric(sc.ResponseKey, seal.AADResponse, []byte(reqHash), res.Stdout); err != nil {
				return nil, err
			}
			respHash = seal.SHA256Hex(body)
			rep.Ciphertext = body
		} else {
			respHash = seal.LinkHash(sc.ResponseKey, step, res.Stdout)
		}
		r := w.receiptFor(fn, id, wire.ModeSequence, link, body, status, len(input), &res)
		r.ResponseHash, r.Prev, r.Sequence, r.Step = respHash, prev, req.Name, step
		r.Caller = certs.CallerHash(p.Caller)
		rc, err := receipt.Sign(r, w.signKey, w.cert.Load().signed)
		if err != nil {
			return nil, err
		}
		w.logReceipt(ctx, rc)
		entry, err := rc.Entry()
		if err != nil {
			return nil, err
		}
		rep.Receipts = append(rep.Receipts, rc)
		rep.Receipt = rc
		if len(res.Stderr) > 0 {
			fmt.Fprintf(&logs, "[step %d %s] ", step, fn.fn.Name)
			logs.Write(res.Stderr)
			if res.Stderr[len(res.Stderr)-1] != '\n' {
				logs.WriteByte('\n')
			}
		}
		if rep.Error != nil {
			break
		}
		input, link, prev = res.Stdout, respHash, receipt.EntryHash(entry)
	}
	if req.Activation != "" && logs.Len() > 0 {
		if rep.Logs, err = seal.SealSymmetric(sc.ResponseKey, seal.AADLogs, []byte(reqHash), logs.Bytes()); err != nil {
			return nil, err
		}
	}
	return rep, nil
}

// errNotRun wraps the reason a step did not start.
var errNotRun = errors.New("step did not run")

// runStep runs one step within its function's input and concurrency limits.
func (w *Worker) runStep(ctx context.Context, fn *loaded, input []byte, step int, id string) (sandbox.Result, error) {
	if len(input) > fn.manifest.Limits.MaxInputBytes {
		return sandbox.Result{}, fmt.Errorf("%w: %w", errNotRun, apierr.New(apierr.PayloadTooLarge,
			"step %d's input is %d bytes; %s accepts at most %d", step, len(input), fn.fn.Name, fn.manifest.Limits.MaxInputBytes))
	}
	release, err := w.slot(ctx, fn)
	if err != nil {
		return sandbox.Result{}, fmt.Errorf("%w: %w", errNotRun, err)
	}
	defer release()
	return w.run(ctx, fn, input, id, wire.ModeSequence)
}
