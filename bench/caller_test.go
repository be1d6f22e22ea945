package bench

import (
	"context"
	"flag"
	"fmt"
	"testing"

	"github.com/cloister-faas/cloister/client"
	"github.com/cloister-faas/cloister/internal/wire"
)

// callerModes are the sealed modes signed by the caller (the default, as
// in BenchmarkInvoke) and anonymous, in the same run: the cost of the
// caller's signature (issue 15), per request and per session. The echo's
// invoker policy is "any", so the worker serves both.
func (e *env) callerModes(tb testing.TB) []mode {
	anon, err := client.New(e.node.URL, e.node.Token, clientPolicy(e.node), client.WithHTTPClient(e.hc))
	if err != nil {
		tb.Fatal(err)
	}
	anonSess, err := anon.OpenSession(context.Background(), fnName, 0)
	if err != nil {
		tb.Fatal(err)
	}
	signed := e.c.CallerHash()
	check := func(res *client.Result, err error, mode, caller string) error {
		if err := checkResult(res, err, mode); err != nil {
			return err
		}
		if res.Receipt.Caller != caller {
			return fmt.Errorf("receipt names caller %q, want %q", res.Receipt.Caller, caller)
		}
		return nil
	}
	open := func(c *client.Client) func(ctx context.Context) error {
		return func(ctx context.Context) error {
			s, err := c.OpenSession(ctx, fnName, 0)
			if err == nil && s.Function().Name != fnName {
				err = fmt.Errorf("session with %s", s.Function().Name)
			}
			return err
		}
	}
	return []mode{
		{"hpke-anonymous", func(ctx context.Context) error {
			res, err := anon.Invoke(ctx, fnName, input, client.InvokeOptions{})
			return check(res, err, wire.ModeHPKE, "")
		}},
		{"hpke-signed", func(ctx context.Context) error {
			res, err := e.c.Invoke(ctx, fnName, input, client.InvokeOptions{})
			return check(res, err, wire.ModeHPKE, signed)
		}},
		{"session-anonymous", func(ctx context.Context) error {
			res, err := anonSess.Invoke(ctx, input)
			return check(res, err, wire.ModeSession, "")
		}},
		{"session-signed", func(ctx context.Context) error {
			res, err := e.sess.Invoke(ctx, input)
			return check(res, err, wire.ModeSession, signed)
		}},
		{"session-open-anonymous", open(anon)},
		{"session-open-signed", open(e.c)},
	}
}

// callerRounds is how many times BenchmarkCallerSignature runs every mode,
// round after round, so that a drift of the machine over the run weighs
// on signed and anonymous modes alike.
var callerRounds = flag.Int("caller.rounds", 3, "BenchmarkCallerSignature: rounds of all its modes")

// BenchmarkCallerSignature measures the sealed modes with and without the
// caller's signature, with -conc concurrent clients (see BenchmarkInvoke):
// each round runs every mode once, signed and anonymous one after the
// other. bench/run.sh caller runs it.
func BenchmarkCallerSignature(b *testing.B) {
	e := fixture(b)
	modes := e.callerModes(b)
	for r := range *callerRounds {
		b.Run(fmt.Sprintf("round-%d", r+1), func(b *testing.B) {
			benchModes(b, e, max(*concurrency, 1), modes)
		})
	}
}

// TestCallerModes is its quick check: one call in each mode, and each
// mode's receipt names the caller it should.
func TestCallerModes(t *testing.T) {
	e := fixture(t)
	for _, m := range e.callerModes(t) {
		if err := m.op(t.Context()); err != nil {
			t.Fatalf("%s: %v", m.name, err)
		}
	}
}
