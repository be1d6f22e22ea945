package console

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sync/errgroup"

	"github.com/cloister-faas/cloister/client"
)

// deployEchoAs deploys the echo module as each of names, signed by tc's
// owner key, straight through the client.
func deployEchoAs(t *testing.T, tc *testConsole, c *client.Client, names ...string) {
	t.Helper()
	module, err := os.ReadFile(filepath.Join("..", "sandbox", "testdata", "echo.wasm"))
	if err != nil {
		t.Fatal(err)
	}
	var g errgroup.Group
	g.SetLimit(2)
	for _, name := range names {
		g.Go(func() error {
			m, err := PrepareManifest(name, "echo.wasm", nil)
			if err != nil {
				return err
			}
			_, err = Deploy(context.Background(), c, m, module, tc.owner)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatalf("deploying: %v", err)
	}
}

// consoleClient is a client of the shared node whose caller key is tc's
// owner key (the default invoker policy admits the deployer's key).
func consoleClient(t *testing.T, tc *testConsole) *client.Client {
	t.Helper()
	n := sharedNode(t)
	c, err := client.New(n.URL, n.Token, tc.pol, client.WithCallerKey(tc.owner))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

type functionsAnswer struct {
	Functions []FunctionView `json:"functions"`
	Next      string         `json:"next"`
	Error     apiError       `json:"error"`
}

func TestFunctionsPaging(t *testing.T) {
	tc := newConsole(t)
	mine := []string{"pg-fn-c", "pg-fn-a", "pg-fn-e", "pg-fn-b", "pg-fn-d"}
	deployEchoAs(t, tc, consoleClient(t, tc), mine...)

	var all functionsAnswer
	if resp := tc.do(t, http.MethodGet, "/api/functions", nil, nil, &all); resp.StatusCode != http.StatusOK || all.Next != "" {
		t.Fatalf("all: HTTP %d, next %q", resp.StatusCode, all.Next)
	}
	var want []string
	for _, f := range all.Functions {
		want = append(want, f.Name)
	}
	for _, limit := range []int{1, 2, 200} {
		var got []string
		path := fmt.Sprintf("/api/functions?limit=%d", limit)
		for pages := 0; ; pages++ {
			if pages > 100 {
				t.Fatal("no end after 100 pages")
			}
			var pg functionsAnswer
			if resp := tc.do(t, http.MethodGet, path, nil, nil, &pg); resp.StatusCode != http.StatusOK {
				t.Fatalf("%s: HTTP %d %+v", path, resp.StatusCode, pg.Error)
			}
			if len(pg.Functions) > limit {
				t.Fatalf("%s: %d functions", path, len(pg.Functions))
			}
			for _, f := range pg.Functions {
				if !f.Certificate.OK {
					t.Errorf("%s: %s's certificate not verified: %s", path, f.Name, f.Certificate.Error)
				}
				got = append(got, f.Name)
			}
			if pg.Next == "" {
				break
			}
			path = fmt.Sprintf("/api/functions?limit=%d&after=%s", limit, url.QueryEscape(pg.Next))
		}
		if !slices.Equal(got, want) {
			t.Fatalf("limit %d: paged %v, want %v (the whole list, each once)", limit, got, want)
		}
		if !slices.IsSorted(got) {
			t.Fatalf("limit %d: not in name order: %v", limit, got)
		}
		for _, n := range mine {
			if !slices.Contains(got, n) {
				t.Fatalf("limit %d: %s missing", limit, n)
			}
		}
	}
	// A page starts after its cursor.
	var pg functionsAnswer
	tc.do(t, http.MethodGet, "/api/functions?limit=2&after=pg-fn-b", nil, nil, &pg)
	if len(pg.Functions) != 2 || pg.Functions[0].Name != "pg-fn-c" || pg.Functions[1].Name != "pg-fn-d" || pg.Next != "pg-fn-d" {
		t.Fatalf("after pg-fn-b: %+v next %q", pg.Functions, pg.Next)
	}
	for _, q := range []string{"limit=0", "limit=201", "limit=x", "after=Bad!", "limit=2&after=" + url.QueryEscape("../x")} {
		var e functionsAnswer
		if resp := tc.do(t, http.MethodGet, "/api/functions?"+q, nil, nil, &e); resp.StatusCode != http.StatusBadRequest || e.Error.Kind != kindBadRequest {
			t.Errorf("%s: HTTP %d %+v, want 400 %s", q, resp.StatusCode, e.Error, kindBadRequest)
		}
	}
}

type activationsAnswer struct {
	Activations []ActivationSummary `json:"activations"`
	Next        string              `json:"next"`
	Error       apiError            `json:"error"`
}

// pageActivations follows next from path (a query without before) and
// returns the ids seen.
func pageActivations(t *testing.T, tc *testConsole, query string, limit int) []string {
	t.Helper()
	var ids []string
	path := fmt.Sprintf("/api/activations?limit=%d&%s", limit, query)
	for pages := 0; ; pages++ {
		if pages > 200 {
			t.Fatal("no end after 200 pages")
		}
		var pg activationsAnswer
		if resp := tc.do(t, http.MethodGet, path, nil, nil, &pg); resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: HTTP %d %+v", path, resp.StatusCode, pg.Error)
		}
		if len(pg.Activations) > limit {
			t.Fatalf("%s: %d activations", path, len(pg.Activations))
		}
		for _, a := range pg.Activations {
			ids = append(ids, a.ID)
		}
		if pg.Next == "" {
			return ids
		}
		path = fmt.Sprintf("/api/activations?limit=%d&%s&before=%s", limit, query, pg.Next)
	}
}

func TestActivationsPaging(t *testing.T) {
	tc := newConsole(t)
	c := consoleClient(t, tc)
	deployEchoAs(t, tc, c, "pg-act")
	var want []string
	for i := range 23 {
		p, err := c.InvokeAsync(t.Context(), "pg-act", fmt.Appendf(nil, `"%d"`, i), client.AsyncOptions{})
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, p.ActivationID)
	}
	slices.Reverse(want) // newest first

	for _, limit := range []int{1, 5, 23, 200} {
		if got := pageActivations(t, tc, "function=pg-act", limit); !slices.Equal(got, want) {
			t.Fatalf("limit %d: paged %v, want %v", limit, got, want)
		}
	}
	// The whole namespace, a page at a time: newest first, each once.
	all := pageActivations(t, tc, "since=1h", 7)
	if !slices.IsSortedFunc(all, func(a, b string) int { return strings.Compare(b, a) }) || len(slices.Compact(slices.Clone(all))) != len(all) {
		t.Fatalf("not newest first, or repeated: %v", all)
	}
	for _, id := range want {
		if !slices.Contains(all, id) {
			t.Fatalf("%s missing from the namespace's pages", id)
		}
	}
	// A status the activations do not have leaves the pages empty, and
	// the listing still ends.
	if got := pageActivations(t, tc, "function=pg-act&status=developer_error", 10); len(got) != 0 {
		t.Fatalf("status filter: %v", got)
	}
	for _, q := range []string{"limit=0", "limit=201", "before=zz", "before=" + want[0] + "0", "before=" + url.QueryEscape(want[0][:31]+"G")} {
		var e activationsAnswer
		if resp := tc.do(t, http.MethodGet, "/api/activations?"+q, nil, nil, &e); resp.StatusCode != http.StatusBadRequest || e.Error.Kind != kindBadRequest {
			t.Errorf("%s: HTTP %d %+v, want 400 %s", q, resp.StatusCode, e.Error, kindBadRequest)
		}
	}
}
