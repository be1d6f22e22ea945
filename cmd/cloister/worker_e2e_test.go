package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cloister-faas/cloister/internal/bus"
	"github.com/cloister-faas/cloister/internal/tee/hw"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestWorkerProcessAndManifestCLI: a worker started as its own process
// joins `cloister up`'s NATS and is admitted; --tee auto refuses to start
// without hardware; the worker leaves the async limits `up` set
// (--activation-ttl); the manifest can be shown, changed with the admin
// key (and not without it) and its history listed.
func TestWorkerProcessAndManifestCLI(t *testing.T) {
	dir := t.TempDir()
	natsAddr := freeAddr(t)
	s := startUp(t, dir, "--nats-listen", natsAddr, "--activation-ttl", "2h", "--max-queue-jobs", "5000")

	if _, err := hw.Detect(); err != nil {
		r := s.cli("worker", "--tee", "auto", "--nats", "nats://"+natsAddr)
		if r.code == 0 || !strings.Contains(r.stderr, "--tee sim") {
			t.Fatalf("worker --tee auto without hardware: exit %d\n%s", r.code, r.stderr)
		}
	}

	var wlog bytes.Buffer
	w := exec.Command(binary, "worker", "--tee", "sim", "--nats", "nats://"+natsAddr, "--id", "w-cli")
	w.Dir = dir
	w.Stdout, w.Stderr = &wlog, &wlog
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	wdone := make(chan error, 1)
	go func() { wdone <- w.Wait() }()
	t.Cleanup(func() {
		if w.ProcessState == nil {
			w.Process.Kill()
			<-wdone
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		doc := ""
		if resp, err := http.Get(s.env["CLOISTER_URL"] + "/v1/attestation"); err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			doc = string(b)
		}
		// Certificates are base64 in the document; the worker id is inside them.
		if strings.Contains(doc, base64.StdEncoding.EncodeToString([]byte(`{"worker_id":"w-cli"`))[:24]) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the worker process was not admitted:\nattestation: %s\nworker log:\n%s", doc, wlog.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !strings.Contains(wlog.String(), "NO hardware protection") {
		t.Errorf("the sim worker did not print the sim warning:\n%s", wlog.String())
	}
	// The worker process opened the async stores after `up` had set them.
	nc, err := nats.Connect("nats://" + natsAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	acts, err := js.KeyValue(ctx, bus.BucketActivations)
	if err != nil {
		t.Fatal(err)
	}
	st, err := acts.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	q, err := js.Stream(ctx, bus.StreamAsync)
	if err != nil {
		t.Fatal(err)
	}
	if st.TTL() != 2*time.Hour || q.CachedInfo().Config.MaxMsgs != 5000 {
		t.Errorf("after the worker started: activation TTL %v, queue jobs %d; want up's 2h and 5000", st.TTL(), q.CachedInfo().Config.MaxMsgs)
	}

	show := s.mustCLI("manifest", "show", "--json")
	var cur struct {
		Hash     string          `json:"manifest_sha256"`
		Manifest json.RawMessage `json:"manifest"`
	}
	if err := json.Unmarshal([]byte(show.stdout), &cur); err != nil || len(cur.Hash) != 64 {
		t.Fatalf("manifest show: %v\n%s", err, show.stdout)
	}
	var m map[string]any
	_ = json.Unmarshal(cur.Manifest, &m)
	m["cert_ttl"] = "2h"
	body, _ := json.Marshal(m)
	next := filepath.Join(dir, "next-manifest.json")
	if err := os.WriteFile(next, body, 0o644); err != nil {
		t.Fatal(err)
	}
	// A key that is not an admin key of the current manifest is refused.
	stranger := filepath.Join(dir, "stranger.key")
	os.WriteFile(stranger, bytes.Repeat([]byte{1}, 32), 0o600)
	if r := s.cli("manifest", "set", next, "--key", stranger); r.code == 0 || !strings.Contains(r.stderr, "admin key") {
		t.Fatalf("manifest set with a stranger's key: exit %d\n%s", r.code, r.stderr)
	}
	set := s.mustCLI("manifest", "set", next)
	if !strings.Contains(set.stdout, "manifest version 2 accepted") {
		t.Fatalf("manifest set: %s", set.stdout)
	}
	hist := s.mustCLI("manifest", "history")
	if lines := strings.Split(strings.TrimSpace(hist.stdout), "\n"); len(lines) != 2 || !strings.Contains(lines[1], "signed by") {
		t.Fatalf("manifest history:\n%s", hist.stdout)
	}
	// The policy now pins the new manifest, and attestation still verifies.
	var after struct {
		Hash     string `json:"manifest_sha256"`
		Manifest struct {
			Version  int    `json:"version"`
			Previous string `json:"previous"`
			CertTTL  string `json:"cert_ttl"`
		} `json:"manifest"`
	}
	if err := json.Unmarshal([]byte(s.mustCLI("manifest", "show", "--json").stdout), &after); err != nil {
		t.Fatal(err)
	}
	if after.Hash == cur.Hash || after.Manifest.Version != 2 || after.Manifest.Previous != cur.Hash || after.Manifest.CertTTL != "2h" {
		t.Fatalf("after the change: %+v (was %s)", after, cur.Hash)
	}

	w.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-wdone:
		if err != nil {
			t.Fatalf("worker exited with %v after SIGTERM:\n%s", err, wlog.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("worker did not stop within 30s of SIGTERM")
	}
	s.stop()
}
