package bench

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/cloister-faas/cloister/client"
	"github.com/cloister-faas/cloister/internal/wire"
)

// BenchmarkInvokeAttestation measures one sealed (HPKE) invocation through
// the SDK with four ways of keeping the coordinator's attestation fresh.
// Each iteration runs one invocation of every way, in turn, so that all
// four see the same machine load (this machine is shared); it reports the
// median and the mean latency of each, and the ratio of each median to the
// no-check median.
//
//   - no-check: the attestation is verified once and never again (its TTL
//     is longer than the run): the baseline with no attestation work per call;
//   - cached-token: WithResultToken and the tokens' 60 s TTL, as a
//     client runs; within a run the cached result is reused;
//   - token-renew-100ms: the attestation expires every 100 ms and is renewed
//     with an attestation-result token (fetch + EdDSA verify);
//   - raw-renew-100ms: it expires every 100 ms and the raw evidence is
//     fetched and verified again (sim evidence here; SEV-SNP and TDX
//     evidence cost more, see BenchmarkVerify* in internal/attest).
func BenchmarkInvokeAttestation(b *testing.B) {
	e := fixture(b)
	ctx := context.Background()
	ways := []struct {
		name string
		opts []client.Option
		c    *client.Client
		lat  []time.Duration
	}{
		{name: "no-check", opts: []client.Option{client.WithAttestationTTL(1000 * time.Hour)}},
		{name: "cached-token", opts: []client.Option{client.WithResultToken()}},
		{name: "token-renew-100ms", opts: []client.Option{client.WithResultToken(), client.WithAttestationTTL(100 * time.Millisecond)}},
		{name: "raw-renew-100ms", opts: []client.Option{client.WithAttestationTTL(100 * time.Millisecond)}},
	}
	for i := range ways {
		w := &ways[i]
		c, err := client.New(e.node.URL, e.node.Token, clientPolicy(e.node), append([]client.Option{client.WithHTTPClient(e.hc), client.WithCallerKey(e.owner)}, w.opts...)...)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := c.Invoke(ctx, fnName, input, client.InvokeOptions{}); err != nil {
			b.Fatal(err)
		}
		w.c = c
	}
	b.ResetTimer()
	for b.Loop() {
		for i := range ways {
			w := &ways[i]
			start := time.Now()
			res, err := w.c.Invoke(ctx, fnName, input, client.InvokeOptions{})
			w.lat = append(w.lat, time.Since(start))
			if err := checkResult(res, err, wire.ModeHPKE); err != nil {
				b.Fatalf("%s: %v", w.name, err)
			}
		}
	}
	b.StopTimer()
	median := func(d []time.Duration) float64 {
		s := slices.Clone(d)
		slices.Sort(s)
		return float64(s[len(s)/2])
	}
	base := median(ways[0].lat)
	for _, w := range ways {
		var sum time.Duration
		for _, d := range w.lat {
			sum += d
		}
		m := median(w.lat)
		b.ReportMetric(m, w.name+"-p50-ns")
		b.ReportMetric(float64(sum)/float64(len(w.lat)), w.name+"-mean-ns")
		if w.name != "no-check" {
			b.ReportMetric(m/base, w.name+"/no-check")
		}
	}
}
