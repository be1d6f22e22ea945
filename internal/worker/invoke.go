package worker

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"strconv"
	"time"

	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/bundle"
	"github.com/cloister-faas/cloister/internal/bus"
	"github.com/cloister-faas/cloister/internal/certs"
	"github.com/cloister-faas/cloister/internal/receipt"
	"github.com/cloister-faas/cloister/internal/sandbox"
	"github.com/cloister-faas/cloister/internal/seal"
	"github.com/cloister-faas/cloister/internal/wire"
)

// SessionTTL is how long a session ticket is valid.
const SessionTTL = time.Hour

// maxSkew bounds the difference between a request's timestamp and the
// worker's clock; it is half the replay window, so that every nonce a
// fresh request can carry is still remembered.
const maxSkew = bus.ReplayWindow / 2

// opened is a request after decryption and replay checks.
type opened struct {
	input       []byte
	responseKey *seal.Symmetric // nil in plain mode
	reqHash     string
	ticket      []byte
	expires     time.Time
	caller      ed25519.PublicKey // the key that signed the request or opened the session; nil: anonymous
}

// handleInvoke answers a gateway's synchronous invocation on the bus: a
// wire.InvokeRequest in the binary envelope in, a wire.InvokeReply in the
// same envelope out (docs/adr/0020-binary-invoke-envelope.md); an error
// travels in the bus's error header. A gateway's probes during a call
// (bus.WorkerSubject) are answered by bus.ServeCalls.
func (w *Worker) handleInvoke(ctx context.Context, b []byte) ([]byte, error) {
	start := time.Now()
	w.inflight.Add(1)
	defer w.inflight.Add(-1)
	var req wire.InvokeRequest
	if err := req.UnmarshalBinary(b); err != nil {
		return nil, apierr.New(apierr.BadRequest, "malformed invoke request: %v", err)
	}
	rep, err := w.invoke(ctx, &req)
	status := "ok"
	if err != nil {
		status = string(apierr.CodeOf(err))
	} else if rep.Error != nil {
		status = string(rep.Error.Code)
	}
	w.invocations.WithLabelValues(req.Mode, status).Inc()
	w.duration.WithLabelValues(req.Mode).Observe(time.Since(start).Seconds())
	if err != nil {
		return nil, err
	}
	return rep.AppendBinary(make([]byte, 0, rep.BinarySize()))
}

func (w *Worker) invoke(ctx context.Context, req *wire.InvokeRequest) (*wire.InvokeReply, error) {
	if err := w.cert.Load().cert.ValidAt(w.now()); err != nil {
		// Receipts signed now would not verify; refuse until renewed.
		return nil, apierr.New(apierr.Unavailable, "worker certificate is not valid; waiting for renewal")
	}
	if req.Mode == wire.ModeSequence {
		return w.invokeSequence(ctx, req)
	}
	fn, err := w.function(ctx, req.Namespace, req.Name, req.Version)
	if err != nil {
		return nil, err
	}
	if err := checkTEEPolicy(w.cert.Load().cert, fn.fn); err != nil {
		return nil, err
	}
	if req.Mode != wire.ModeSessionOpen {
		// The slot is taken before the request is opened: a call refused
		// for want of one has not spent its nonce, so the gateway may try
		// another worker with the same sealed request.
		release, err := w.slot(ctx, fn)
		if err != nil {
			return nil, err
		}
		defer release()
	}
	op, err := w.open(ctx, fn, req)
	if err != nil {
		return nil, err
	}
	if err := authorise(fn, op.caller); err != nil {
		return w.refuse(fn, req.Mode, op, err, "", 0)
	}
	if req.Mode == wire.ModeSessionOpen {
		ack, err := op.responseKey.Seal(seal.AADResponse, []byte(op.reqHash), nil)
		if err != nil {
			return nil, err
		}
		return &wire.InvokeReply{Version: fn.fn.Version, Ciphertext: ack, Ticket: op.ticket, TicketExpires: op.expires}, nil
	}
	if len(op.input) > fn.manifest.Limits.MaxInputBytes {
		return nil, apierr.New(apierr.PayloadTooLarge, "input is %d bytes; the function accepts at most %d", len(op.input), fn.manifest.Limits.MaxInputBytes)
	}
	id := newInvocationID(w.now())
	res, runErr := w.run(ctx, fn, op.input, id, req.Mode)
	rep := &wire.InvokeReply{Version: fn.fn.Version}
	var body []byte
	status := "ok"
	if errors.Is(runErr, sandbox.ErrBusy) {
		// The function did not run: no receipt.
		return nil, sandboxError(runErr)
	}
	if runErr != nil {
		ae := apierr.From(sandboxError(runErr))
		if ae.Code == apierr.Unavailable {
			// The function started: unavailable would tell the client that
			// nothing ran (it would send the request again, and its spent
			// nonce would make that a replay).
			ae = apierr.New(apierr.Interrupted, "the call started and then failed: %s", ae.Message)
		}
		if ae.Code == apierr.Internal || ae.Code == apierr.Interrupted {
			w.log.Error("run failed", "function", fn.fn.Name, "err", runErr)
			return nil, ae
		}
		rep.Error, status = ae, string(ae.Code)
	} else {
		body = res.Stdout
		if op.responseKey != nil {
			if body, err = op.responseKey.Seal(seal.AADResponse, []byte(op.reqHash), res.Stdout); err != nil {
				return nil, err
			}
			rep.Ciphertext = body
		} else {
			rep.Output = body
		}
	}
	rc, err := w.receipt(fn, id, req.Mode, op, body, status, &res)
	if err != nil {
		return nil, err
	}
	w.logReceipt(ctx, rc)
	rep.Receipt = rc
	if req.Activation != "" || (req.Logs && op.responseKey != nil) {
		if rep.Logs, err = sealLogs(op, res.Stderr); err != nil {
			return nil, err
		}
	}
	return rep, nil
}

// open decrypts and checks the request according to its mode.
func (w *Worker) open(ctx context.Context, fn *loaded, req *wire.InvokeRequest) (*opened, error) {
	f := fn.fn
	if req.Mode != wire.ModePlain && req.Sealed.Version != 0 && req.Sealed.Version != f.Version {
		return nil, apierr.New(apierr.DecryptFailed, "request was sealed to version %d, not %d", req.Sealed.Version, f.Version)
	}
	if req.Activation != "" && req.Mode != wire.ModePlain && req.Mode != wire.ModeHPKE {
		return nil, apierr.New(apierr.BadRequest, "mode %q cannot be queued; async invocations use hpke or plain", req.Mode)
	}
	switch req.Mode {
	case wire.ModePlain:
		if f.Confidential != bundle.ConfidentialOptional {
			return nil, apierr.New(apierr.ConfidentialRequired, "function %s requires confidential (sealed) requests", f.Name)
		}
		return &opened{input: req.Plain, reqHash: seal.SHA256Hex(req.Plain)}, nil
	case wire.ModeHPKE, wire.ModeSessionOpen:
		s := req.Sealed
		openSession := req.Mode == wire.ModeSessionOpen
		info := seal.Info(f.Namespace, f.Name, f.Version, f.CodeHash)
		if req.Activation != "" {
			info = seal.AsyncInfo(f.Namespace, f.Name, f.Version, f.CodeHash)
		}
		sc, err := seal.OpenRequest(fn.key, info, s.Enc, s.Ciphertext, openSession)
		if err != nil {
			return nil, apierr.Wrap(apierr.DecryptFailed, err)
		}
		p, err := w.checkPayload(ctx, fn, sc.Payload, req.Activation, info, s.Enc)
		if err != nil {
			return nil, err
		}
		rk, err := seal.NewSymmetric(sc.ResponseKey)
		if err != nil {
			return nil, err
		}
		op := &opened{input: p.Input, responseKey: rk, reqHash: seal.RequestHash(req.Mode, s.Enc, nil, s.Ciphertext), caller: p.Caller}
		if openSession {
			op.expires = w.now().Add(SessionTTL).UTC()
			tid := make([]byte, 16)
			rand.Read(tid)
			op.ticket, err = seal.SealTicket(fn.ticketKey, seal.Ticket{ID: tid, Key: sc.SessionKey, Namespace: f.Namespace,
				Name: f.Name, Version: f.Version, CodeHash: f.CodeHash, Expires: op.expires, Caller: p.Caller})
			if err != nil {
				return nil, err
			}
		}
		return op, nil
	case wire.ModeSession:
		s := req.Sealed
		ot, err := fn.sessionTicket(s.Ticket, w.now())
		if err != nil {
			return nil, err
		}
		t := ot.ticket
		pt, err := ot.key.Open(seal.AADRequest, s.Ticket, s.Ciphertext)
		if err != nil {
			return nil, apierr.Wrap(apierr.DecryptFailed, err)
		}
		p, err := w.checkPayload(ctx, fn, pt, "", nil, nil)
		if err != nil {
			return nil, err
		}
		if p.Caller != nil {
			return nil, apierr.New(apierr.CallerSignature, "a session message carries no caller signature: the session's opener is its caller")
		}
		return &opened{input: p.Input, responseKey: ot.key, reqHash: seal.RequestHash(req.Mode, nil, s.Ticket, s.Ciphertext), caller: t.Caller}, nil
	default:
		return nil, apierr.New(apierr.BadRequest, "unknown mode %q", req.Mode)
	}
}

// checkPayload decodes the sealed payload, verifies the caller's
// signature of a request opened from HPKE encapsulation enc under info,
// and refuses stale or replayed requests. The nonce is remembered in the
// replay log, which every worker shares, so a replay is caught
// whichever worker it reaches.
//
// An async request (activation != "") is remembered longer, with its
// activation, in the async nonce bucket instead: see checkAsyncNonce.
func (w *Worker) checkPayload(ctx context.Context, fn *loaded, b []byte, activation string, info, enc []byte) (seal.Payload, error) {
	p, err := seal.DecodePayload(b)
	if err != nil {
		return p, apierr.Wrap(apierr.BadRequest, err)
	}
	if enc != nil {
		if err := p.CheckCaller(info, enc); err != nil {
			return p, apierr.Wrap(apierr.CallerSignature, err)
		}
	}
	if activation != "" {
		return p, w.checkAsyncNonce(ctx, fnID(fn.fn.Namespace, fn.fn.Name, fn.fn.Version), p, activation)
	}
	if d := w.now().Sub(p.Time); d > maxSkew || d < -maxSkew {
		return p, apierr.New(apierr.StaleRequest, "request time %s is more than %s from the worker's clock", p.Time.UTC().Format(time.RFC3339), maxSkew)
	}
	d := sha256.Sum256(append([]byte(fnID(fn.fn.Namespace, fn.fn.Name, fn.fn.Version)+"\x00"), p.Nonce[:]...))
	return p, rememberNonce(ctx, w.cfg.Stores.Replay, bus.ReplayID(d[:]))
}

// nonceTries and nonceWait bound how long a worker tries to record a nonce
// while the replay log does not answer (a JetStream election takes a few
// seconds).
const (
	nonceTries = 8
	nonceWait  = 250 * time.Millisecond
)

// nonceLog is where nonces are recorded: *bus.Replay.
type nonceLog interface {
	Add(ctx context.Context, id string, token []byte) error
}

// rememberNonce records id in the replay log, or fails with replay if it
// is there. The record holds a random token: when a write's answer is
// lost and it is tried again, finding its own token means the first write
// landed, not that the request is a replay (which would fail a request
// that ran nowhere, and the client's retry of it with it).
func rememberNonce(ctx context.Context, log nonceLog, id string) error {
	token := make([]byte, 16)
	rand.Read(token)
	var err error
	for try := 1; try <= nonceTries; try++ {
		if err = log.Add(ctx, id, token); err == nil {
			return nil
		}
		if errors.Is(err, bus.ErrReplayed) {
			return apierr.New(apierr.Replay, "this sealed request was already received")
		}
		if ctx.Err() != nil {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(nonceWait * time.Duration(try)):
		}
	}
	return apierr.New(apierr.Unavailable, "replay store unavailable: %v", err)
}

// serveLimit bounds the goroutines serving invoke messages: the slots and
// room for the calls waiting for them. Past it the bus callback waits,
// which only a flood of calls still loading their functions can reach:
// the fair queue refuses before.
func (w *Worker) serveLimit() int { return w.cfg.Slots.Slots * 8 }

// slot takes one of fn's concurrency slots and one of the worker's, with
// the function's memory limit reserved from the budget, in the namespace's
// fair share (see slots). A function at its own concurrency limit is
// refused at once (concurrency_limit); a full worker makes the call wait
// its turn, or refuses it with overloaded.
func (w *Worker) slot(ctx context.Context, fn *loaded) (func(), error) {
	select {
	case fn.sem <- struct{}{}:
	default:
		return nil, apierr.New(apierr.ConcurrencyLimit, "function %s is at its concurrency limit of %d", fn.fn.Name, cap(fn.sem))
	}
	release, err := w.slots.acquire(ctx, fn.fn.Namespace, fn.memoryBytes())
	if err != nil {
		<-fn.sem
		return nil, err
	}
	return func() { release(); <-fn.sem }, nil
}

// run runs one invocation of fn in a fresh sandbox (the caller holds a
// slot, see Worker.slot).
func (w *Worker) run(ctx context.Context, fn *loaded, input []byte, id, mode string) (sandbox.Result, error) {
	if fn.state != nil {
		ctx = sandbox.WithKV(ctx, stateKV{fn.state})
	}
	if fn.script != nil {
		in, err := scriptInput(fn, input)
		if err != nil {
			return sandbox.Result{}, err
		}
		res, runErr := fn.reactor.Call(ctx, in)
		return res, scriptOutcome(fn.manifest.Runtime, &res, runErr, mode == wire.ModePlain)
	}
	if fn.reactor != nil {
		return fn.reactor.Call(ctx, input)
	}
	return fn.module.Run(ctx, sandbox.Invocation{
		Name:  fn.fn.Name,
		Stdin: input,
		Meta: map[string]string{
			"CLOISTER_NAMESPACE":     fn.fn.Namespace,
			"CLOISTER_FUNCTION":      fn.fn.Name,
			"CLOISTER_VERSION":       strconv.Itoa(fn.fn.Version),
			"CLOISTER_INVOCATION_ID": id,
			"CLOISTER_MODE":          mode,
		},
		Caps: sandbox.Capabilities{
			Clock:  fn.manifest.Capabilities.Clock,
			Random: fn.manifest.Capabilities.Random,
			Env:    fn.manifest.Capabilities.Env,
		},
	})
}

func (w *Worker) receipt(fn *loaded, id, mode string, op *opened, body []byte, status string, res *sandbox.Result) (*receipt.Signed, error) {
	r := w.receiptFor(fn, id, mode, op.reqHash, body, status, len(op.input), res)
	r.Caller = certs.CallerHash(op.caller)
	return receipt.Sign(r, w.signKey, w.cert.Load().signed)
}

// refuse answers a call whose caller fn's invoker policy does not allow:
// nothing ran, and the refusal is signed and logged like any invocation,
// so that the owner sees who tried.
// A refused step of a sequence names the sequence and the step.
func (w *Worker) refuse(fn *loaded, mode string, op *opened, refusal error, sequence string, step int) (*wire.InvokeReply, error) {
	ae := apierr.From(refusal)
	r := w.receiptFor(fn, newInvocationID(w.now()), mode, op.reqHash, nil, string(ae.Code), len(op.input), &sandbox.Result{})
	r.Caller, r.Sequence, r.Step = certs.CallerHash(op.caller), sequence, step
	rc, err := receipt.Sign(r, w.signKey, w.cert.Load().signed)
	if err != nil {
		return nil, err
	}
	w.logReceipt(context.Background(), rc)
	return &wire.InvokeReply{Version: fn.fn.Version, Error: ae, Receipt: rc}, nil
}

// receiptFor builds the unsigned receipt of one run.
func (w *Worker) receiptFor(fn *loaded, id, mode, reqHash string, body []byte, status string, inBytes int, res *sandbox.Result) *receipt.Receipt {
	adm := w.cert.Load()
	m := receipt.Metering{}
	if res.Wall > 0 {
		m.WallNanos = ptr(res.Wall.Nanoseconds())
	}
	if res.CPUMeasured {
		m.CPUNanos = ptr(res.CPU.Nanoseconds())
	}
	if res.MemoryPages > 0 {
		m.PeakMemoryPages = ptr(res.MemoryPages)
	}
	if res.InstructionsMeasured {
		m.Instructions = ptr(res.Instructions)
		m.FuelLimit = ptr(fn.module.Limits().Fuel)
	}
	m.InputBytes = ptr(int64(inBytes))
	m.OutputBytes = ptr(int64(len(res.Stdout)))
	if fn.reactor != nil {
		m.HostCalls = map[string]uint64{"cloister": res.HostCalls}
	}
	r := &receipt.Receipt{
		Version:          receipt.Version,
		InvocationID:     id,
		Namespace:        fn.fn.Namespace,
		Function:         fn.fn.Name,
		FunctionVersion:  fn.fn.Version,
		CodeHash:         fn.fn.CodeHash,
		InstrumentedHash: fn.module.InstrumentedHash(),
		BundleHash:       fn.fn.BundleHash,
		SnapshotHash:     fn.snapshot,
		ResetGeneration:  ptr(res.Generation),
		Mode:             mode,
		RequestHash:      reqHash,
		ResponseHash:     seal.SHA256Hex(body),
		Status:           status,
		Metering:         m,
		TEE:              receipt.TEE{Kind: adm.cert.TEE, TCB: adm.cert.TCB, Measurement: adm.cert.Measurement},
		WorkerID:         adm.cert.WorkerID,
		Time:             w.now().UTC(),
	}
	if mode == wire.ModePlain {
		r.Trust = receipt.TrustGatewayTrusted
	}
	return r
}

func ptr[T any](v T) *T { return &v }

// newInvocationID returns a time-ordered unique id: 8 bytes of unix
// nanoseconds and 8 random bytes, hex.
func newInvocationID(now time.Time) string {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(now.UnixNano()))
	rand.Read(b[8:])
	return hex.EncodeToString(b[:])
}
