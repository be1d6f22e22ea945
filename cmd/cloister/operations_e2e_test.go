package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
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

// TestRecoveryKeyCLI: keys recovery writes a key pair once and refuses to
// overwrite it; a coordinator refuses a recovery key that is not one;
// coordinator recover wants its key and policy.
func TestRecoveryKeyCLI(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "owner-recovery.key")
	if out, err := runBinary(dir, "keys", "recovery"); exitCode(err) != exitUsage {
		t.Errorf("keys recovery without --out: %v\n%s", err, out)
	}
	if out, err := runBinary(dir, "keys", "recovery", "--out", key); err != nil || !strings.Contains(out, "public key: ") {
		t.Fatalf("keys recovery: %v\n%s", err, out)
	}
	pub, err := os.ReadFile(key + ".pub")
	if err != nil || len(strings.TrimSpace(string(pub))) != 2*1216 { // an X-Wing (MLKEM768-X25519) public key
		t.Fatalf("public key %q: %v", pub, err)
	}
	if out, err := runBinary(dir, "keys", "recovery", "--out", key); err == nil || !strings.Contains(out, "exists") {
		t.Errorf("keys recovery over an existing key: %v\n%s", err, out)
	}
	bad := filepath.Join(dir, "bad.pub")
	os.WriteFile(bad, []byte("not a key\n"), 0o600)
	if out, err := runBinary(dir, "coordinator", "--tee", "sim", "--recovery-key", bad, "--data", filepath.Join(dir, "c")); exitCode(err) != exitUsage || !strings.Contains(out, "--recovery-key") {
		t.Errorf("coordinator with a malformed recovery key: %v\n%s", err, out)
	}
	if out, err := runBinary(dir, "coordinator", "recover", "--recovery-key", key); exitCode(err) != exitUsage {
		t.Errorf("coordinator recover without --policy: %v\n%s", err, out)
	}
}

func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	return 0
}
