package client

import (
	"errors"
	"testing"

	"github.com/cloister-faas/cloister/internal/certs"
	"github.com/cloister-faas/cloister/internal/tee"
)

// TestWorkerPolicyMinTCB: the client refuses a receipt signed by a worker
// below the function's certified min_tcb, as the roles do.
func TestWorkerPolicyMinTCB(t *testing.T) {
	fn := &Function{Name: "f", Version: 1, allowTEE: []tee.Kind{tee.KindSEVSNP},
		minTCB: map[tee.Kind]string{tee.KindSEVSNP: "bl=3,tee=0,snp=8,ucode=115"}}
	if err := checkWorkerPolicy(fn, &certs.Worker{TEE: tee.KindSEVSNP, TCB: "bl=3,tee=0,snp=7,ucode=115"}); !errors.Is(err, ErrVerification) || !errors.Is(err, certs.ErrTEEPolicy) {
		t.Fatalf("a worker below min_tcb: %v", err)
	}
	if err := checkWorkerPolicy(fn, &certs.Worker{TEE: tee.KindSEVSNP, TCB: "bl=3,tee=0,snp=8,ucode=115"}); err != nil {
		t.Fatalf("a worker at min_tcb: %v", err)
	}
	if err := checkWorkerPolicy(fn, &certs.Worker{TEE: tee.KindSim, TCB: "sim-1"}); !errors.Is(err, ErrVerification) {
		t.Fatalf("a worker of another kind: %v", err)
	}
}
