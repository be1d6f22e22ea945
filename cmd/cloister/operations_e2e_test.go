package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os/exec"
	"strconv"
	"testing"
	"time"
)

// TestOperationsScript runs scripts/cluster-loopback.sh, which runs the
// commands of docs/operations.md on loopback: NATS from `cloister nats
// config`, a coordinator's first start and a second one joining, workers
// and gateways, a failover after SIGKILL of the active coordinator and the
// killed one's recovery as a standby.
func TestOperationsScript(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a cluster of real processes")
	}
	base := freeBase(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sh", repo("scripts", "cluster-loopback.sh"), t.TempDir())
	cmd.Env = append(cmd.Environ(), "CLOISTER="+binary, "BASE_PORT="+strconv.Itoa(base), "CLOISTER_POLICY=", "CLOISTER_URL=")
	cmd.WaitDelay = 10 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("scripts/cluster-loopback.sh: %v\n%s", err, out)
	}
	t.Logf("%s", out)
}

// freeBase returns a port base for the script whose ports (see its header)
// are free now.
func freeBase(t *testing.T) int {
	t.Helper()
	for range 50 {
		base := 20000 + rand.IntN(8000)
		ok := true
		for _, p := range []int{base, base + 1, base + 2, base + 2000, base + 2001, base + 2002, base + 3858, base + 3859} {
			l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
			if err != nil {
				ok = false
				break
			}
			l.Close()
		}
		if ok {
			return base
		}
	}
	t.Fatal("no free ports for the script")
	return 0
}
