package ledger_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

const crashDirEnv = "CLOISTER_LEDGER_CRASH_DIR"

// TestCrashChild is the child of TestKill9KeepsAcknowledgedAppends: it
// appends from many goroutines and prints "ack <index> <entry>" for every
// acknowledged append until it is killed.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv(crashDirEnv)
	if dir == "" {
		t.Skip("run by TestKill9KeepsAcknowledgedAppends")
	}
	l := openLog(t, dir, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // the parent kills us long before
	defer cancel()
	var mu sync.Mutex
	var wg sync.WaitGroup
	for g := range 32 {
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				e := fmt.Sprintf("crash-%02d-%06d", g, i)
				idx, err := l.Append(ctx, []byte(e))
				if err != nil {
					continue
				}
				mu.Lock()
				os.Stdout.WriteString("ack " + strconv.FormatUint(idx, 10) + " " + e + "\n") // one write(2) per line
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	os.Exit(3) // not killed: the parent reports it
}

// TestKill9KeepsAcknowledgedAppends kills a process with SIGKILL while it
// appends, reopens the log and checks that every append it acknowledged is
// in the log, at its index, and that the log audits clean.
func TestKill9KeepsAcknowledgedAppends(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns a child process")
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashDirEnv+"="+dir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}

	const killAfter = 3000 // acknowledged appends
	acked := map[uint64]string{}
	sc := bufio.NewScanner(out)
	deadline := time.AfterFunc(10*time.Second, func() { cmd.Process.Kill() })
	defer deadline.Stop()
	killed := false
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 3 || f[0] != "ack" {
			continue
		}
		idx, err := strconv.ParseUint(f[1], 10, 64)
		if err != nil {
			t.Fatalf("bad line %q", sc.Text())
		}
		if prev, dup := acked[idx]; dup {
			t.Fatalf("index %d acknowledged for %q and %q", idx, prev, f[2])
		}
		acked[idx] = f[2]
		if len(acked) == killAfter && !killed {
			killed = true
			if err := cmd.Process.Kill(); err != nil { // SIGKILL
				t.Fatal(err)
			}
		}
	}
	err = cmd.Wait()
	if !killed {
		t.Fatalf("child stopped before %d acknowledgements (%d): %v\n%s", killAfter, len(acked), err, stderr.String())
	}
	if ws, ok := cmd.ProcessState.Sys().(interface{ Signaled() bool }); !ok || !ws.Signaled() {
		t.Fatalf("child was not killed by a signal: %v", cmd.ProcessState)
	}
	var maxIdx uint64
	for idx := range acked {
		maxIdx = max(maxIdx, idx)
	}
	t.Logf("child killed after %d acknowledged appends (highest index %d)", len(acked), maxIdx)

	l := openLog(t, dir, 1)
	defer closeLog(t, l)
	size, err := l.IntegratedSize(context.Background())
	if err != nil || size <= maxIdx {
		t.Fatalf("integrated size after restart: got %d, %v; want > %d", size, err, maxIdx)
	}
	cp, _ := await(t, l, size)
	ctx := context.Background()
	rep, err := l.Audit(ctx, 0, nil, nil)
	if err != nil || !rep.RootMatches || rep.Entries != cp.Size {
		t.Fatalf("audit after restart: %v (root match %v, %d entries of %d)", err, rep.RootMatches, rep.Entries, cp.Size)
	}
	for idx, want := range acked {
		got, err := l.Entry(ctx, idx)
		if err != nil || string(got) != want {
			t.Fatalf("acknowledged entry %d: got %q, %v; want %q", idx, got, err, want)
		}
	}
	// And the log takes appends again after the crash.
	idx, err := l.Append(ctx, []byte("after the crash"))
	if err != nil || idx != cp.Size {
		t.Fatalf("append after restart: got %d, %v; want %d", idx, err, cp.Size)
	}
}
