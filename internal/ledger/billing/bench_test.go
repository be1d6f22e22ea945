package billing_test

import (
	"crypto/ed25519"
	"encoding/json"
	"testing"

	"github.com/cloister-faas/cloister/internal/receipt"
)

// BenchmarkCheck measures the per-entry cost of the audit's check on real
// signed receipts: "ed25519" is the baseline, the one receipt signature
// verification no check can skip; "auditor" is Auditor.Check (strict
// decoding, the canonical-entry check, the full verification with the
// certificate cached, the duplicate set and the bill); "auditor-parallel"
// runs it from every core, as ledger.Audit does. The audit goal is
// 1,000,000 entries in ≤ 30 s: s/1M-entries reports what the check alone
// costs per core.
func BenchmarkCheck(b *testing.B) {
	const n = 4096
	es := genuine(b, n)
	sigs := make([]receipt.Signed, n)
	for i, e := range es {
		if err := json.Unmarshal(e, &sigs[i]); err != nil {
			b.Fatal(err)
		}
	}
	wk := pub(workerKey)
	report := func(b *testing.B) {
		b.ReportMetric(b.Elapsed().Seconds()/float64(b.N)*1e6, "s/1M-entries")
	}
	b.Run("ed25519", func(b *testing.B) {
		i := 0
		for b.Loop() {
			s := &sigs[i%n]
			if !ed25519.Verify(wk, append([]byte("cloister-receipt-v1\n"), s.Receipt...), s.Signature) {
				b.Fatal("signature")
			}
			i++
		}
		report(b)
	})
	b.Run("auditor", func(b *testing.B) {
		a := newAuditor()
		i := 0
		for b.Loop() {
			// Indices grow past n: later rounds are duplicates, which cost
			// the same verification.
			if err := a.Check(uint64(i), es[i%n]); err != nil {
				b.Fatal(err)
			}
			i++
		}
		report(b)
	})
	b.Run("auditor-parallel", func(b *testing.B) {
		a := newAuditor()
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				if err := a.Check(uint64(i), es[i%n]); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
		report(b)
	})
}
