package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/cloister-faas/cloister/internal/attest/collateral"
)

// TestCollateralBundle: the CLI turns a collateral cache into an offline
// bundle that the getter loads; an empty cache and a missing --out fail.
func TestCollateralBundle(t *testing.T) {
	dir := t.TempDir()
	cache := filepath.Join(dir, "cache")
	os.MkdirAll(cache, 0o755)
	if err := os.WriteFile(filepath.Join(cache, "a.json"), []byte(`{"url":"https://kdsintf.amd.com/vcek/v1/Milan/crl","body":"AQID"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) int {
		cmd := exec.Command(binary, args...)
		cmd.Dir = dir
		if err := cmd.Run(); err != nil {
			if ee, ok := err.(*exec.ExitError); ok {
				return ee.ExitCode()
			}
			t.Fatal(err)
		}
		return 0
	}
	out := filepath.Join(dir, "bundle.json")
	if code := run("collateral", "bundle", "--cache", cache, "--out", out); code != 0 {
		t.Fatalf("exit %d", code)
	}
	b, err := collateral.LoadBundle(out)
	if err != nil || string(b["https://kdsintf.amd.com/vcek/v1/Milan/crl"].Body) != "\x01\x02\x03" {
		t.Fatalf("bundle: %v %v", b, err)
	}
	if code := run("collateral", "bundle", "--cache", t.TempDir(), "--out", out); code != exitError {
		t.Fatalf("empty cache: exit %d, want %d", code, exitError)
	}
	if code := run("collateral", "bundle", "--cache", cache); code != exitUsage {
		t.Fatalf("no --out: exit %d, want %d", code, exitUsage)
	}
}
