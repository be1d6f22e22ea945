package bench

import (
	"context"
	"testing"
	"time"

	"github.com/cloister-faas/cloister/client"
	"github.com/cloister-faas/cloister/internal/wire"
)

// BenchmarkInvokeAttestation measures one sealed (HPKE) invocation through
// the SDK, sequentially, with four ways of keeping the coordinator's
// attestation fresh, in the same run:
//
//   - no-check: the attestation is verified once and never again (its TTL
//     is longer than the run): the baseline with no attestation work per call;
//   - cached-token: WithResultToken and the 60 s TTL of seed 003, as a client
//     would run; within a run the cached result is reused;
//   - token-renew-100ms: the attestation expires every 100 ms and is renewed
//     with an attestation-result token (fetch + EdDSA verify);
//   - raw-renew-100ms: it expires every 100 ms and the raw evidence is
//     fetched and verified again (sim evidence here; SEV-SNP and TDX
//     evidence cost far more, see BenchmarkVerify* in internal/attest).
func BenchmarkInvokeAttestation(b *testing.B) {
	e := fixture(b)
	ctx := context.Background()
	for _, c := range []struct {
		name string
		opts []client.Option
	}{
		{"no-check", []client.Option{client.WithAttestationTTL(1000 * time.Hour)}},
		{"cached-token", []client.Option{client.WithResultToken()}},
		{"token-renew-100ms", []client.Option{client.WithResultToken(), client.WithAttestationTTL(100 * time.Millisecond)}},
		{"raw-renew-100ms", []client.Option{client.WithAttestationTTL(100 * time.Millisecond)}},
	} {
		b.Run(c.name, func(b *testing.B) {
			cl, err := client.New(e.node.URL, e.node.Token, e.node.Policy, append([]client.Option{client.WithHTTPClient(e.hc)}, c.opts...)...)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := cl.Invoke(ctx, fnName, input, client.InvokeOptions{}); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for b.Loop() {
				res, err := cl.Invoke(ctx, fnName, input, client.InvokeOptions{})
				if err := checkResult(res, err, wire.ModeHPKE); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
