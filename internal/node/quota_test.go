package node_test

import (
	"context"
	"errors"
	"net/http"
	"testing"

	"github.com/cloister-faas/cloister/client"
	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/gateway"
	"github.com/cloister-faas/cloister/internal/node"
)

// wantQuota fails unless err is quota_exceeded.
func wantQuota(t *testing.T, what string, err error) {
	t.Helper()
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Code != string(apierr.QuotaExceeded) {
		t.Errorf("%s: got %v, want quota_exceeded", what, err)
	}
}

// TestNamespaceQuotas: a hostile namespace fills its quotas of functions,
// versions, triggers and rules; each next one is refused, replacing is
// still allowed, and the default namespace is not affected.
func TestNamespaceQuotas(t *testing.T) {
	e := start(t, func(o *node.Options) {
		o.Quotas = gateway.Quotas{Functions: 2, Versions: 2, Triggers: 2, Rules: 2}
	})
	ctx := context.Background()
	h := e.tenant("hostile")
	open := openToAll
	h.deploy("f1", fixture(t, "echo.wasm"), open)
	h.deploy("f2", fixture(t, "echo.wasm"), open)
	h.deploy("f1", fixture(t, "echo.wasm"), open) // v2

	build := func(name string) []byte { return h.build(name, fixture(t, "echo.wasm"), open) }
	_, err := h.c.Deploy(ctx, "f3", build("f3"))
	wantQuota(t, "a third function", err)
	_, err = h.c.Deploy(ctx, "f1", build("f1"))
	wantQuota(t, "a third version", err)

	for _, n := range []string{"t1", "t2"} {
		if _, err := h.c.PutTrigger(ctx, client.Trigger{Name: n}); err != nil {
			t.Fatal(err)
		}
	}
	_, err = h.c.PutTrigger(ctx, client.Trigger{Name: "t3"})
	wantQuota(t, "a third trigger", err)
	if _, err := h.c.PutTrigger(ctx, client.Trigger{Name: "t1", Cron: "@daily"}); err != nil {
		t.Errorf("replacing a trigger at the quota: %v", err)
	}
	for _, n := range []string{"r1", "r2"} {
		if _, err := h.c.PutRule(ctx, client.Rule{Name: n, Trigger: "t1", Function: "f1"}); err != nil {
			t.Fatal(err)
		}
	}
	_, err = h.c.PutRule(ctx, client.Rule{Name: "r3", Trigger: "t2", Function: "f2"})
	wantQuota(t, "a third rule", err)

	// Deleting frees the quota.
	if err := h.c.Delete(ctx, "f2"); err != nil {
		t.Fatal(err)
	}
	if _, err := h.c.Deploy(ctx, "f3", build("f3")); err != nil {
		t.Errorf("a function after a delete: %v", err)
	}

	// The default namespace is not affected.
	e.deploy("echo", fixture(t, "echo.wasm"), nil)
	if _, err := e.c.Invoke(ctx, "echo", []byte("x"), client.InvokeOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.c.PutTrigger(ctx, client.Trigger{Name: "t3"}); err != nil {
		t.Errorf("default's trigger: %v", err)
	}
	if code, _ := e.send(http.MethodGet, "/readyz", "", "", nil); code != http.StatusOK {
		t.Errorf("/readyz: %d", code)
	}
	if e.metric(`cloister_refusals_total{code="quota_exceeded"}`) < 4 {
		t.Errorf("refusals not counted in /metrics")
	}
}

// TestNamespaceRate: a namespace past its request rate is refused with
// quota_exceeded while another namespace is served.
func TestNamespaceRate(t *testing.T) {
	e := start(t, func(o *node.Options) { o.Quotas = gateway.Quotas{Rate: 5, Burst: 20} })
	ctx := context.Background()
	h := e.tenant("hostile")
	refused := 0
	for range 60 {
		_, err := h.c.List(ctx)
		var ce *client.Error
		switch {
		case err == nil:
		case errors.As(err, &ce) && ce.Code == string(apierr.QuotaExceeded):
			refused++
		default:
			t.Fatal(err)
		}
	}
	if refused == 0 {
		t.Fatal("60 requests at once, over a burst of 20, were all served")
	}
	if _, err := e.c.List(ctx); err != nil {
		t.Errorf("the default namespace: %v", err)
	}
	if code, _ := e.send(http.MethodGet, "/readyz", "", "", nil); code != http.StatusOK {
		t.Errorf("/readyz: %d", code)
	}
}
