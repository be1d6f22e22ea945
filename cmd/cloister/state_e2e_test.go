package main

import (
	"fmt"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// TestStateSurvivesKill: a function's sealed state, written through the CLI
// by examples/reactor-counter-c, survives a SIGKILL of the whole process
// (the anchor's log in the coordinator and the values in JetStream), and
// reads back without a state_integrity error after the restart.
func TestStateSurvivesKill(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	dir := t.TempDir()
	s := startUp(t, dir)
	s.mustCLI("keys", "new")
	m := writeManifest(t, dir, "counter", `{"name": "counter", "abi": "reactor", "capabilities": {"state": true}}`)
	s.mustCLI("fn", "deploy", "counter", repo("examples", "reactor-counter-c", "reactor-counter-c.wasm"), "--manifest", m)
	for i := 1; i <= 5; i++ {
		if r := s.mustCLI("invoke", "counter", "--data", "visits"); strings.TrimSpace(r.stdout) != strconv.Itoa(i) {
			t.Fatalf("increment %d: got %q", i, r.stdout)
		}
	}
	// More increments in flight while the process is killed.
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 20 {
			s.cli("invoke", "counter", "--data", "visits")
		}
	}()
	s.mustCLI("invoke", "counter", "--data", "visits")
	s.cmd.Process.Signal(syscall.SIGKILL)
	<-s.done
	<-done

	s = startUp(t, dir)
	r := s.mustCLI("invoke", "counter", "--data", "?visits")
	n, err := strconv.Atoi(strings.TrimSpace(r.stdout))
	if err != nil || n < 6 {
		t.Fatalf("after SIGKILL the counter reads %q, want at least the 6 acknowledged increments", r.stdout)
	}
	if r := s.mustCLI("invoke", "counter", "--data", "visits"); strings.TrimSpace(r.stdout) != fmt.Sprint(n+1) {
		t.Fatalf("increment after the restart: %q, want %d", r.stdout, n+1)
	}
	s.stop()
}
