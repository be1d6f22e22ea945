package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/cloister-faas/cloister/client"
	"github.com/cloister-faas/cloister/internal/console"
)

// Scale of TestConsoleScale (issue 18: the overview and the functions page
// with 200 functions and 10,000 activations).
const (
	scaleFunctions   = 200
	scaleActivations = 10_000
	// scaleInvoked is how many of the functions the activations spread over.
	scaleInvoked = 10
)

// TestConsoleScale measures the console's pages in a headless chromium
// (test/console/scale_test.js) against a real `cloister up` holding 200
// functions and 10,000 activations. The first paints are reported, not
// asserted; what is asserted is that each list shows its first page and
// pages on, and that no page scrolls sideways at 1280 or 390 px.
func TestConsoleScale(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary and a browser, and makes 10,000 activations")
	}
	script := repo("test", "console", "scale_test.js")
	nodeBin, chromium := browserTools(t)

	dir := t.TempDir()
	// The activations are submitted faster than a namespace's default rate.
	s := startUp(t, dir, "--namespace-rate", "50000")
	s.mustCLI("keys", "new")
	c := scaleClient(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	start := time.Now()
	names := deployScaleFunctions(ctx, t, c, filepath.Join(dir, "owner.key"))
	deployed := time.Since(start)
	start = time.Now()
	last := submitScaleActivations(ctx, t, c, names[:scaleInvoked])
	submitted := time.Since(start)
	waitFinished(ctx, t, c, last)
	t.Logf("setup: %d functions deployed in %s; %d activations submitted in %s, finished %s later",
		scaleFunctions, deployed.Round(time.Millisecond), scaleActivations, submitted.Round(time.Millisecond), (time.Since(start) - submitted).Round(time.Millisecond))
	walkActivations(ctx, t, c)

	consoleURL := startConsole(t, s)
	cmd := exec.Command(nodeBin, script)
	cmd.Dir = repo("test", "console")
	cmd.Env = append(os.Environ(),
		"CONSOLE_URL="+consoleURL,
		"CHROMIUM="+chromium,
		fmt.Sprintf("FUNCTIONS=%d", scaleFunctions),
		fmt.Sprintf("ACTIVATIONS=%d", scaleActivations),
		"FIRST_FUNCTION="+names[0],
		// Screenshots of the lists, if asked for (not under
		// test/console/screenshots: TestConsoleBrowser empties it).
		"SCREENSHOTS="+os.Getenv("CONSOLE_SCALE_SCREENSHOTS"),
	)
	start = time.Now()
	out, err := cmd.CombinedOutput()
	t.Logf("node %s (%s):\n%s", filepath.Base(script), time.Since(start).Round(time.Millisecond), out)
	if err != nil {
		t.Fatalf("the browser checks failed: %v", err)
	}
	t.Log(paintLine(t, out))
	s.stop()
}

// paintLine turns the script's "timings {...}" line into the test's
// report: median first-contentful-paint and time until the list showed.
func paintLine(t *testing.T, out []byte) string {
	t.Helper()
	var timings map[string]struct {
		FCP   float64 `json:"fcp"`
		Shown float64 `json:"shown"`
	}
	for line := range strings.Lines(string(out)) {
		if j, ok := strings.CutPrefix(line, "timings "); ok {
			if err := json.Unmarshal([]byte(j), &timings); err != nil {
				t.Fatalf("timings %q: %v", j, err)
			}
		}
	}
	var fcp, shown []string
	for _, p := range []string{"overview", "functions", "activations"} {
		tm, ok := timings[p]
		if !ok {
			t.Fatalf("no timings of the %s page in the script's output", p)
		}
		fcp = append(fcp, fmt.Sprintf("%s %.0f ms", p, tm.FCP))
		shown = append(shown, fmt.Sprintf("%s %.0f ms", p, tm.Shown))
	}
	return fmt.Sprintf("first paint: %s (%d functions, %d activations); list shown: %s",
		strings.Join(fcp, ", "), scaleFunctions, scaleActivations, strings.Join(shown, ", "))
}

// scaleClient is a client of s whose caller key is the owner key.
func scaleClient(t *testing.T, s *server) *client.Client {
	t.Helper()
	pol, err := client.LoadPolicy(s.env["CLOISTER_POLICY"])
	if err != nil {
		t.Fatal(err)
	}
	k, err := loadKey(filepath.Join(s.dir, "owner.key"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(s.env["CLOISTER_URL"], s.env["CLOISTER_TOKEN"], pol, client.WithCallerKey(k))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// deployScaleFunctions deploys the echo module as scaleFunctions functions
// (plaintext allowed, any invoker), a few at a time, and returns their
// names in order.
func deployScaleFunctions(ctx context.Context, t *testing.T, c *client.Client, keyPath string) []string {
	t.Helper()
	module, err := os.ReadFile(repo("internal", "sandbox", "testdata", "echo.wasm"))
	if err != nil {
		t.Fatal(err)
	}
	owner, err := loadKey(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	names := make([]string, scaleFunctions)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for i := range names {
		names[i] = fmt.Sprintf("fn-%03d", i)
		g.Go(func() error {
			m, err := console.PrepareManifest(names[i], "echo.wasm", []byte(`{"confidential":"optional","invokers":"any"}`))
			if err != nil {
				return err
			}
			if _, err := console.Deploy(gctx, c, m, module, owner); err != nil {
				return fmt.Errorf("deploying %s: %w", names[i], err)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	return names
}

// submitScaleActivations queues scaleActivations plaintext invocations of
// fns, a bounded number at a time, waiting and retrying when the
// namespace's queue is full (1,000 jobs by default), and returns the ids
// of the last ones submitted.
func submitScaleActivations(ctx context.Context, t *testing.T, c *client.Client, fns []string) []string {
	t.Helper()
	var next, retries atomic.Int64
	ids := make([]string, scaleActivations)
	g, gctx := errgroup.WithContext(ctx)
	for range 24 {
		g.Go(func() error {
			for {
				i := next.Add(1) - 1
				if i >= scaleActivations {
					return nil
				}
				for {
					p, err := c.InvokeAsync(gctx, fns[i%int64(len(fns))], fmt.Appendf(nil, `{"n":%d}`, i), client.AsyncOptions{Plaintext: true})
					var ce *client.Error
					if errors.As(err, &ce) && (ce.Status == http.StatusTooManyRequests || ce.Status == http.StatusServiceUnavailable) {
						retries.Add(1)
						select {
						case <-gctx.Done():
							return gctx.Err()
						case <-time.After(20 * time.Millisecond):
						}
						continue
					}
					if err != nil {
						return fmt.Errorf("activation %d: %w", i, err)
					}
					ids[i] = p.ActivationID
					break
				}
			}
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d submissions waited for a full queue", retries.Load())
	return ids[len(ids)-100:]
}

// waitFinished waits until each of ids is final: the queue has drained
// (it is about first in, first out), so that the pages are measured on a
// quiet node.
func waitFinished(ctx context.Context, t *testing.T, c *client.Client, ids []string) {
	t.Helper()
	for _, id := range ids {
		for {
			a, err := c.Activation(ctx, id)
			if err != nil {
				t.Fatalf("activation %s: %v", id, err)
			}
			if a.Status != "queued" && a.Status != "running" {
				break
			}
			select {
			case <-ctx.Done():
				t.Fatalf("activation %s is still %s: %v", id, a.Status, ctx.Err())
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
}

// walkActivations pages through the namespace's activations with the Go
// client, 200 at a time: each of the scaleActivations once, newest first.
func walkActivations(ctx context.Context, t *testing.T, c *client.Client) {
	t.Helper()
	start := time.Now()
	seen := make(map[string]bool, scaleActivations)
	prev, before, pages := "", "", 0
	for {
		list, next, err := c.ActivationsPage(ctx, client.ActivationQuery{Limit: client.MaxActivationPage, Before: before})
		if err != nil {
			t.Fatalf("page %d: %v", pages, err)
		}
		pages++
		for _, a := range list {
			if seen[a.ActivationID] || (prev != "" && a.ActivationID >= prev) {
				t.Fatalf("page %d: activation %s repeated or out of order (after %s)", pages, a.ActivationID, prev)
			}
			seen[a.ActivationID], prev = true, a.ActivationID
		}
		if next == "" {
			break
		}
		before = next
	}
	if len(seen) != scaleActivations {
		t.Fatalf("paged through %d activations, want %d", len(seen), scaleActivations)
	}
	t.Logf("the Go client paged through %d activations in %d pages in %s", len(seen), pages, time.Since(start).Round(time.Millisecond))
}
