package bench

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/cloister-faas/cloister/client"
	"github.com/cloister-faas/cloister/internal/wire"
)

// seqName is the 3-step sequence of the echo command that
// BenchmarkAsyncAndSequence defines.
const seqName = "bench-seq3"

// asyncModes are the modes of BenchmarkAsyncAndSequence, each beside the
// synchronous mode it is compared with in the same run.
func (e *env) asyncModes(tb testing.TB) []mode {
	if _, err := e.c.PutSequence(tb.Context(), seqName, []client.StepRef{{Name: fnName}, {Name: fnName}, {Name: fnName}}, e.owner); err != nil {
		tb.Fatalf("defining the sequence: %v", err)
	}
	hpke := func(ctx context.Context) error {
		res, err := e.c.Invoke(ctx, fnName, input, client.InvokeOptions{})
		return checkResult(res, err, wire.ModeHPKE)
	}
	return []mode{
		{"hpke", hpke},
		// Submit only: the time until the activation id comes back.
		{"async-submit", func(ctx context.Context) error {
			p, err := e.c.InvokeAsync(ctx, fnName, input, client.AsyncOptions{})
			if err == nil && len(p.ActivationID) != 32 {
				err = fmt.Errorf("activation id %q", p.ActivationID)
			}
			return err
		}},
		// Submit, then poll every 2 ms until the verified result opens.
		{"async-roundtrip", func(ctx context.Context) error {
			p, err := e.c.InvokeAsync(ctx, fnName, input, client.AsyncOptions{})
			if err != nil {
				return err
			}
			res, err := e.c.WaitActivation(ctx, p, 2*time.Millisecond)
			return checkResult(res, err, wire.ModeHPKE)
		}},
		// Three sealed invocations one after the other: what a client
		// would do without sequences (each output back to the client).
		{"hpke-x3", func(ctx context.Context) error {
			for range 3 {
				if err := hpke(ctx); err != nil {
					return err
				}
			}
			return nil
		}},
		{"sequence-3", func(ctx context.Context) error {
			res, err := e.c.InvokeSequence(ctx, seqName, input)
			if err == nil && len(res.Chain) != 3 {
				err = fmt.Errorf("%d receipts in the chain, want 3", len(res.Chain))
			}
			return checkResult(res, err, wire.ModeSequence)
		}},
	}
}

// BenchmarkAsyncAndSequence measures async invocations (submit alone, and
// submit until the result is verified) against a synchronous hpke
// invocation, and a 3-step sequence against three hpke invocations, with
// -conc concurrent clients. Read req/s, p50-ms and p99-ms.
func BenchmarkAsyncAndSequence(b *testing.B) {
	e := fixture(b)
	benchModes(b, e, max(*concurrency, 1), e.asyncModes(b))
}

// TestAsyncAndSequenceModes runs each mode of the benchmark once.
func TestAsyncAndSequenceModes(t *testing.T) {
	e := fixture(t)
	for _, m := range e.asyncModes(t) {
		if err := m.op(t.Context()); err != nil {
			t.Fatalf("%s: %v", m.name, err)
		}
	}
}
