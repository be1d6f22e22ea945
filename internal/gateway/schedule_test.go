package gateway

import (
	"testing"

	"github.com/cloister-faas/cloister/internal/certs"
	"github.com/cloister-faas/cloister/internal/tee"
)

func TestRankWarmthThenLoad(t *testing.T) {
	cases := []struct {
		name  string
		cands []candidate
		want  string
	}{
		{"warm beats more free capacity", []candidate{{id: "a", free: 60}, {id: "b", warm: true, free: 2}}, "b"},
		{"among warm, more free capacity", []candidate{{id: "a", warm: true, free: 3}, {id: "b", warm: true, free: 9}, {id: "c", free: 64}}, "b"},
		{"among cold, more free capacity", []candidate{{id: "a", free: 3}, {id: "b", free: 9}}, "b"},
	}
	for _, c := range cases {
		rank(c.cands, 0)
		if c.cands[0].id != c.want {
			t.Errorf("%s: got %s first, want %s", c.name, c.cands[0].id, c.want)
		}
	}
	// Ties are spread: over many rotations every tied worker comes first.
	firsts := map[string]bool{}
	for rot := range 1024 {
		cs := []candidate{{id: "w-1", free: 5}, {id: "w-2", free: 5}, {id: "w-3", free: 5}}
		rank(cs, rot)
		firsts[cs[0].id] = true
	}
	if len(firsts) != 3 {
		t.Fatalf("ties went first to only %v", firsts)
	}
}

func TestSatisfies(t *testing.T) {
	snp := &certs.Worker{TEE: tee.KindSEVSNP, TCB: "bl=3,tee=0,snp=8,ucode=115"}
	tdx := &certs.Worker{TEE: tee.KindTDX, TCB: "03000500000000000000000000000000"}
	sim := &certs.Worker{TEE: tee.KindSim, TCB: "sim-1"}
	cases := []struct {
		name string
		fc   certs.Function
		w    *certs.Worker
		want bool
	}{
		{"no policy, sim", certs.Function{}, sim, true},
		{"snp only, snp", certs.Function{AllowTEE: []tee.Kind{tee.KindSEVSNP}}, snp, true},
		{"snp only, tdx", certs.Function{AllowTEE: []tee.Kind{tee.KindSEVSNP}}, tdx, false},
		{"snp only, sim", certs.Function{AllowTEE: []tee.Kind{tee.KindSEVSNP}}, sim, false},
		{"snp TCB met", certs.Function{MinTCB: map[tee.Kind]string{tee.KindSEVSNP: "bl=3,snp=8"}}, snp, true},
		{"snp TCB not met", certs.Function{MinTCB: map[tee.Kind]string{tee.KindSEVSNP: "snp=9"}}, snp, false},
		{"tdx TCB not met", certs.Function{MinTCB: map[tee.Kind]string{tee.KindTDX: "03000600000000000000000000000000"}}, tdx, false},
		{"min TCB of another kind does not apply", certs.Function{MinTCB: map[tee.Kind]string{tee.KindTDX: "ff000000000000000000000000000000"}}, snp, true},
	}
	for _, c := range cases {
		if got := satisfies(&c.fc, c.w); got != c.want {
			t.Errorf("%s: got %v, want %v", c.name, got, c.want)
		}
	}
}
