package gateway

// Paging through GET /v1/functions (after=NAME) and GET /v1/activations
// (before=ID): every item once, in order, and bad cursors and limits
// refused with bad_request.

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/async"
	"github.com/cloister-faas/cloister/internal/bundle"
	"github.com/cloister-faas/cloister/internal/bus"
	"github.com/cloister-faas/cloister/internal/bus/bustest"
	"github.com/cloister-faas/cloister/internal/certs"
	"github.com/cloister-faas/cloister/internal/registry"
	"github.com/cloister-faas/cloister/internal/wire"
)

// functionsPage is the body of GET /v1/functions.
type functionsPage struct {
	Functions []wire.FunctionInfo `json:"functions"`
	Next      *string             `json:"next"`
}

// pageFunctions follows next from the first page, limit at a time, and
// returns the names seen in order and the number of pages.
func pageFunctions(t *testing.T, f *handlerFixture, limit int) (names []string, pages int) {
	t.Helper()
	after := ""
	for {
		if pages++; pages > 1000 {
			t.Fatal("no end after 1000 pages")
		}
		target := fmt.Sprintf("/v1/functions?limit=%d", limit)
		if after != "" {
			target += "&after=" + url.QueryEscape(after)
		}
		a := f.serve(f.g.listFunctions, false, http.MethodGet, target, "", "", nil)
		var pg functionsPage
		if a.status != http.StatusOK || json.Unmarshal(a.body, &pg) != nil {
			t.Fatalf("%s: %d %s", target, a.status, a.body)
		}
		if len(pg.Functions) > limit {
			t.Fatalf("%s: %d functions, over the limit", target, len(pg.Functions))
		}
		for _, fi := range pg.Functions {
			names = append(names, fi.Name)
		}
		if pg.Next == nil {
			return names, pages
		}
		if len(pg.Functions) == 0 || *pg.Next != pg.Functions[len(pg.Functions)-1].Name {
			t.Fatalf("%s: next %q is not the page's last name", target, *pg.Next)
		}
		after = *pg.Next
	}
}

// checkFunctionPages pages through f's namespace at several limits: want,
// in order, each once.
func checkFunctionPages(t *testing.T, f *handlerFixture, want []string) {
	t.Helper()
	for _, limit := range []int{1, 7, 50, 200} {
		got, pages := pageFunctions(t, f, limit)
		if len(got) != len(want) {
			t.Fatalf("limit %d: %d functions, want %d", limit, len(got), len(want))
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("limit %d: function %d is %s, want %s", limit, i, got[i], want[i])
			}
		}
		if wantPages := (len(want) + limit - 1) / limit; pages != wantPages {
			t.Errorf("limit %d: %d pages, want %d", limit, pages, wantPages)
		}
	}
	// Without a limit, all of them, and no next.
	a := f.serve(f.g.listFunctions, false, http.MethodGet, "/v1/functions", "", "", nil)
	var pg functionsPage
	if err := json.Unmarshal(a.body, &pg); err != nil || len(pg.Functions) != len(want) || pg.Next != nil {
		t.Fatalf("no limit: %d functions, next %v, %v; want %d and no next", len(pg.Functions), pg.Next, err, len(want))
	}
}

// functionNames are n names in an order that is not their sorted one, and
// the sorted order.
func functionNames(n int) (deploy, sorted []string) {
	for i := range n {
		deploy = append(deploy, fmt.Sprintf("fn-%03d", (i*37)%n))
	}
	for i := range n {
		sorted = append(sorted, fmt.Sprintf("fn-%03d", i))
	}
	return deploy, sorted
}

// TestListFunctionsPages pages through 230 functions of the fake registry.
func TestListFunctionsPages(t *testing.T) {
	f := newHandlerFixture(t, false)
	deploy, sorted := functionNames(230)
	for _, n := range deploy {
		f.fns.add("acme", n, 1, bundle.ConfidentialOptional, 0)
	}
	f.fns.add("other", "zz-other", 1, bundle.ConfidentialOptional, 0)
	checkFunctionPages(t, f, sorted)
	// A cursor need not name a function: the page starts after it.
	a := f.serve(f.g.listFunctions, false, http.MethodGet, "/v1/functions?limit=2&after=fn-0995", "", "", nil)
	var pg functionsPage
	if json.Unmarshal(a.body, &pg) != nil || len(pg.Functions) != 2 || pg.Functions[0].Name != "fn-100" {
		t.Fatalf("after a name that is not listed: %s", a.body)
	}
}

// TestListFunctionsPagesRegistry pages through 230 functions of a real
// registry (embedded NATS), which reads only each page's records.
func TestListFunctionsPagesRegistry(t *testing.T) {
	nc := bustest.Connect(t)
	st, err := bus.OpenStores(t.Context(), nc, 1, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	reg := registry.New(st.JS, st.Registry)
	key := ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize))
	deploy, sorted := functionNames(230)
	put := func(ns, name string) error {
		c, err := certs.Sign(key, certs.DomainFunction, certs.Function{Namespace: ns, Name: name, Version: 1, CodeHash: "code-" + name})
		if err != nil {
			return err
		}
		return reg.Put(context.Background(), ns, name, 1, &registry.Record{Certificate: c, Manifest: json.RawMessage(`{}`), Object: ns + "/" + name, Created: time.Now()})
	}
	var g errgroup.Group
	g.SetLimit(8)
	for _, n := range append(deploy, "deleted", "zz-deleted") {
		g.Go(func() error { return put("acme", n) })
	}
	g.Go(func() error { return put("other", "zz-other") })
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	// Deleted functions are passed over: one ends no page early, and
	// one after the last function adds no empty last page.
	for _, n := range []string{"deleted", "zz-deleted"} {
		if err := reg.Delete(t.Context(), "acme", n); err != nil {
			t.Fatal(err)
		}
	}
	f := newHandlerFixture(t, false)
	f.g.svc = newService(reg, f.workers, nil)
	checkFunctionPages(t, f, sorted)
}

func TestListFunctionsBadPage(t *testing.T) {
	f := newHandlerFixture(t, false)
	f.fns.add("acme", "open", 1, bundle.ConfidentialOptional, 0)
	for _, target := range []string{
		"/v1/functions?limit=0", "/v1/functions?limit=-1", "/v1/functions?limit=201", "/v1/functions?limit=x",
		"/v1/functions?limit=1.5", "/v1/functions?after=Bad!", "/v1/functions?limit=5&after=" + url.QueryEscape("a/b"),
		"/v1/functions?after=-leading",
	} {
		if a := f.serve(f.g.listFunctions, false, http.MethodGet, target, "", "", nil); a.status != http.StatusBadRequest || a.code(t) != apierr.BadRequest {
			t.Errorf("%s: got %d %s, want 400 %s", target, a.status, a.body, apierr.BadRequest)
		}
	}
}

// activationsPage is the body of GET /v1/activations.
type activationsPage struct {
	Activations []wire.Activation `json:"activations"`
	Next        *string           `json:"next"`
}

// TestListActivationsPages pages through 450 activations of a real store
// (embedded NATS) with before: each once, newest first.
func TestListActivationsPages(t *testing.T) {
	as := bustest.OpenAsync(t, bustest.Connect(t))
	store := async.NewStore(as, nil)
	base := time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC)
	ids := make([]string, 450) // oldest first
	var g errgroup.Group
	g.SetLimit(16)
	for i := range ids {
		ids[i] = async.NewID(base.Add(time.Duration(i) * time.Millisecond))
		g.Go(func() error {
			return store.Record(context.Background(), &wire.Activation{ActivationID: ids[i], Namespace: "acme", Name: []string{"a", "b"}[i%2], Status: wire.StatusSuccess})
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	f := newHandlerFixture(t, true)
	f.g.svc = newService(f.fns, f.workers, store)

	page := func(target string) activationsPage {
		t.Helper()
		a := f.serve(f.g.listActivations, false, http.MethodGet, target, "", "", nil)
		var pg activationsPage
		if a.status != http.StatusOK || json.Unmarshal(a.body, &pg) != nil {
			t.Fatalf("%s: %d %s", target, a.status, a.body)
		}
		return pg
	}
	for _, q := range []struct {
		limit int
		name  string
	}{{1, ""}, {30, ""}, {200, ""}, {33, "b"}} {
		var got []string
		target := fmt.Sprintf("/v1/activations?limit=%d&name=%s", q.limit, q.name)
		for pages := 0; ; pages++ {
			if pages > 1000 {
				t.Fatal("no end after 1000 pages")
			}
			pg := page(target)
			for _, a := range pg.Activations {
				got = append(got, a.ActivationID)
			}
			if pg.Next == nil {
				break
			}
			target = fmt.Sprintf("/v1/activations?limit=%d&name=%s&before=%s", q.limit, q.name, *pg.Next)
		}
		var want []string
		for i := len(ids) - 1; i >= 0; i-- {
			if q.name == "" || (q.name == "b") == (i%2 == 1) {
				want = append(want, ids[i])
			}
		}
		if len(got) != len(want) {
			t.Fatalf("limit %d name %q: %d activations, want %d", q.limit, q.name, len(got), len(want))
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("limit %d name %q: activation %d is %s, want %s", q.limit, q.name, i, got[i], want[i])
			}
		}
	}
	// Without a limit: the first 30, as before, and where to go on.
	if pg := page("/v1/activations"); len(pg.Activations) != 30 || pg.Next == nil || *pg.Next != ids[len(ids)-30] {
		t.Fatalf("default page: %d activations, next %v", len(pg.Activations), pg.Next)
	}
	// OpenWhisk's skip and limit still page (its own way).
	a := f.serve(f.g.owListActivations, true, http.MethodGet, "/api/v1/namespaces/_/activations?limit=5&skip=440", "", "", nil)
	var ow []OWActivation
	if err := json.Unmarshal(a.body, &ow); err != nil || len(ow) != 5 || ow[0].ActivationID != ids[9] {
		t.Fatalf("OpenWhisk skip: %d %s", a.status, a.body)
	}

	for _, target := range []string{
		"/v1/activations?before=zz", "/v1/activations?before=" + ids[0] + "0", "/v1/activations?before=" + ids[0][:31] + "G",
		"/v1/activations?limit=201", "/v1/activations?limit=0", "/v1/activations?limit=3&before=%20",
	} {
		if a := f.serve(f.g.listActivations, false, http.MethodGet, target, "", "", nil); a.status != http.StatusBadRequest || a.code(t) != apierr.BadRequest {
			t.Errorf("%s: got %d %s, want 400 %s", target, a.status, a.body, apierr.BadRequest)
		}
	}
}
