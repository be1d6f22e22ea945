package seal_test

import (
	"testing"

	"github.com/cloister-faas/cloister/internal/certs"
	"github.com/cloister-faas/cloister/internal/seal"
)

// BenchmarkSuites measures, for each KEM in one run, what a sealed request
// costs the client (seal) and the worker (open), and the same for a
// session opening (which also exports the session key): X25519 against
// the post-quantum MLKEM768-X25519 (X-Wing). bench/run.sh suites runs it.
func BenchmarkSuites(b *testing.B) {
	input := make([]byte, 256)
	for _, s := range []certs.Suite{seal.SuiteX25519, seal.SuiteXWing} {
		k := hello.keyOf(b, s)
		pub, info := seal.PublicKeyBytes(k), hello.info()
		for _, session := range []bool{false, true} {
			what := "request"
			if session {
				what = "session-open"
			}
			b.Run(seal.SuiteName(s)+"/"+what+"/seal", func(b *testing.B) {
				for b.Loop() {
					if _, err := seal.SealRequest(pub, info, seal.NewPayload(input, now), nil, session); err != nil {
						b.Fatal(err)
					}
				}
			})
			c, err := seal.SealRequest(pub, info, seal.NewPayload(input, now), nil, session)
			if err != nil {
				b.Fatal(err)
			}
			b.Run(seal.SuiteName(s)+"/"+what+"/open", func(b *testing.B) {
				for b.Loop() {
					if _, err := seal.OpenRequest(k, info, c.Enc, c.Ciphertext, session); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(len(c.Enc)+len(c.Ciphertext)), "wire-bytes")
			})
		}
	}
}
