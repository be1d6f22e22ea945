package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// chromiumPath is where Debian's chromium package puts its binary; CHROMIUM
// overrides it.
func chromiumPath() (string, error) {
	if p := os.Getenv("CHROMIUM"); p != "" {
		_, err := os.Stat(p)
		return p, err
	}
	if _, err := os.Stat("/usr/bin/chromium"); err == nil {
		return "/usr/bin/chromium", nil
	}
	return exec.LookPath("chromium")
}

// browserTools returns node and Debian's chromium, with playwright-core
// installed in test/console, or skips the test (fails it in CI, which
// installs them).
func browserTools(t *testing.T) (nodeBin, chromium string) {
	t.Helper()
	nodeBin, err := exec.LookPath("node")
	if err == nil {
		_, err = os.Stat(repo("test", "console", "node_modules", "playwright-core", "package.json"))
	}
	if err == nil {
		chromium, err = chromiumPath()
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("node, playwright-core or chromium is missing (.ci/run installs chromium with apt and playwright-core with npm ci in test/console): %v", err)
		}
		t.Skipf("skipping: node, playwright-core or chromium is missing (apt install chromium; npm ci in test/console): %v", err)
	}
	return nodeBin, chromium
}

// startConsole runs `cloister console` for s's deployment, with env added
// to the client's environment (a CLOISTER_URL there points it elsewhere),
// and returns the URL it printed, with its token.
func startConsole(t *testing.T, s *server, env ...string) (consoleURL string) {
	t.Helper()
	cmd := exec.Command(binary, "console", "--addr", "127.0.0.1:0", "--key", filepath.Join(s.dir, "owner.key"))
	cmd.Dir = s.dir
	cmd.Env = append(os.Environ(),
		"CLOISTER_ENV="+filepath.Join(s.dir, ".cloister", "client.env"),
		"CLOISTER_URL=", "CLOISTER_TOKEN=", "CLOISTER_POLICY=",
		"XDG_CACHE_HOME="+filepath.Join(s.dir, "cache"),
		"CLOISTER_ACTIVATIONS_DIR="+filepath.Join(s.dir, "activations"),
		"HOME="+s.dir,
	)
	cmd.Env = append(cmd.Env, env...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		if sc.Scan() {
			lines <- sc.Text()
		}
		io.Copy(io.Discard, stdout)
		done <- cmd.Wait()
	}()
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		childRaces(t, "cloister console", stderr.String())
	})
	select {
	case line := <-lines:
		if !strings.HasPrefix(line, "http://127.0.0.1:") || !strings.Contains(line, "/?token=") {
			t.Fatalf("cloister console printed %q, want its URL with the token", line)
		}
		return line
	case err := <-done:
		t.Fatalf("cloister console exited early: %v\n%s", err, stderr.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("cloister console printed no URL in 30s:\n%s", stderr.String())
	}
	return ""
}

// tamperingGateway is a reverse proxy in front of a gateway that flips a
// byte of the signed receipt in every successful invocation's answer, as a
// lying gateway would. It counts the receipts it tampered with in n.
func tamperingGateway(t *testing.T, gateway string, n *atomic.Int64) *httptest.Server {
	t.Helper()
	u, err := url.Parse(gateway)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.ModifyResponse = func(resp *http.Response) error {
		if resp.Request.Method != http.MethodPost || !strings.HasSuffix(resp.Request.URL.Path, "/invoke") || resp.StatusCode != http.StatusOK {
			return nil
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
		var m map[string]json.RawMessage
		if json.Unmarshal(body, &m) == nil && m["receipt"] != nil {
			var sr struct {
				Receipt   []byte          `json:"receipt"`
				Signature json.RawMessage `json:"sig"`
				Cert      json.RawMessage `json:"worker_cert"`
			}
			if json.Unmarshal(m["receipt"], &sr) == nil && len(sr.Receipt) > 10 {
				sr.Receipt[len(sr.Receipt)/2] ^= 0x01
				m["receipt"], _ = json.Marshal(sr)
				body, _ = json.Marshal(m)
				n.Add(1)
			}
		}
		resp.Body = io.NopCloser(bytes.NewReader(body))
		resp.ContentLength = int64(len(body))
		resp.Header.Del("Content-Length")
		return nil
	}
	p := httptest.NewServer(rp)
	t.Cleanup(p.Close)
	return p
}

// TestConsoleBrowser drives `cloister console` in a headless chromium
// (Debian's, through playwright-core: test/console/console_test.js),
// against a real `cloister up`: login, deploy and sealed invoke from the
// browser, async activations, the ledger and the bill, HTML shown as text,
// cross-origin refusals, and a receipt tampered by the gateway (a proxy
// here) shown as a verification failure. It saves screenshots of every
// page under test/console/screenshots/.
func TestConsoleBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary and a browser")
	}
	script := repo("test", "console", "console_test.js")
	nodeBin, chromium := browserTools(t)

	dir := t.TempDir()
	s := startUp(t, dir)
	s.mustCLI("keys", "new")
	consoleURL := startConsole(t, s)
	var tampered atomic.Int64
	proxy := tamperingGateway(t, s.env["CLOISTER_URL"], &tampered)
	tamperedURL := startConsole(t, s, "CLOISTER_URL="+proxy.URL)

	shots := repo("test", "console", "screenshots")
	cmd := exec.Command(nodeBin, script)
	cmd.Dir = repo("test", "console")
	cmd.Env = append(os.Environ(),
		"CONSOLE_URL="+consoleURL,
		"TAMPERED_CONSOLE_URL="+tamperedURL,
		"CHROMIUM="+chromium,
		"GO_WASM="+repo("examples", "hello-go", "hello-go.wasm"),
		"JS_SOURCE="+repo("examples", "hello-js", "main.js"),
		"SCREENSHOTS="+shots,
	)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	t.Logf("node %s (%s):\n%s", filepath.Base(script), time.Since(start).Round(time.Millisecond), out)
	if err != nil {
		t.Fatalf("the browser checks failed: %v\ncloister log:\n%s", err, s.log)
	}
	if tampered.Load() == 0 {
		t.Errorf("the tampering proxy changed no receipt: the verification failure the page showed was not the one under test")
	}
	s.stop()
}
