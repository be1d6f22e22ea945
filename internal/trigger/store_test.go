package trigger

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/bus/bustest"
	"github.com/cloister-faas/cloister/internal/wire"
)

// TestListWhileRulesChange: a namespace's rules are all listed while
// others are switched on and off, and its quota counts what is stored,
// deletions included. A listing that follows a watch (ListKeys) misses a
// rule whenever another changes during it.
func TestListWhileRulesChange(t *testing.T) {
	as := bustest.OpenAsync(t, bustest.Connect(t))
	const n = 30
	s := NewStoreWithQuotas(as.JS, as.Triggers, Quotas{Rules: n + 1})
	ctx := t.Context()
	if err := s.PutTrigger(ctx, &wire.Trigger{Namespace: "acme", Name: "tick", Cron: "0 0 1 1 *", Created: time.Now()}); err != nil {
		t.Fatal(err)
	}
	rule := func(i int, active bool) *wire.Rule {
		return &wire.Rule{Namespace: "acme", Name: fmt.Sprintf("rule-%02d", i), Trigger: "tick", Function: "fn", Active: active, Created: time.Now()}
	}
	for i := range n {
		if err := s.PutRule(ctx, rule(i, true)); err != nil {
			t.Fatal(err)
		}
	}
	cctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for round := 0; cctx.Err() == nil; round++ {
				for i := g; i < n && cctx.Err() == nil; i += 4 {
					// Straight to the bucket: a PutRule's own reads would
					// leave the listing too quiet a bucket to miss a key.
					b, _ := json.Marshal(rule(i, round%2 == 1))
					if _, err := as.Triggers.Put(cctx, ruleKey("acme", fmt.Sprintf("rule-%02d", i)), b); err != nil && cctx.Err() == nil {
						t.Errorf("put: %v", err)
						return
					}
				}
			}
		})
	}
	for round := range 100 {
		l, err := s.Rules(ctx, "acme")
		if err != nil {
			t.Fatal(err)
		}
		if len(l) != n {
			cancel()
			wg.Wait()
			t.Fatalf("round %d: listed %d rules, want %d", round, len(l), n)
		}
	}
	cancel()
	wg.Wait()

	// The quota (n+1): one more rule fits; then none, even after a
	// deletion leaves its marker among the stream's subjects and another
	// rule is deleted and put back.
	if err := s.PutRule(ctx, rule(n, true)); err != nil {
		t.Fatalf("rule %d of a quota of %d: %v", n+1, n+1, err)
	}
	if err := s.PutRule(ctx, rule(n+1, true)); apierr.CodeOf(err) != apierr.QuotaExceeded {
		t.Fatalf("a rule past the quota: got %v, want quota_exceeded", err)
	}
	if err := s.DeleteRule(ctx, "acme", "rule-00"); err != nil {
		t.Fatal(err)
	}
	if err := s.PutRule(ctx, rule(n+1, true)); err != nil {
		t.Fatalf("a rule in the room a deletion made: %v", err)
	}
	if err := s.PutRule(ctx, rule(n+2, true)); apierr.CodeOf(err) != apierr.QuotaExceeded {
		t.Fatalf("a rule past the quota after a deletion: got %v, want quota_exceeded", err)
	}
}
