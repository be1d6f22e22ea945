package gateway

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/cloister-faas/cloister/internal/apierr"
)

func TestRatesPerNamespace(t *testing.T) {
	r := newRates(Quotas{Rate: 10, Burst: 5}.withDefaults())
	now := time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC)
	for i := range 5 {
		if err := r.allow("hostile", now); err != nil {
			t.Fatalf("request %d within the burst: %v", i, err)
		}
	}
	if err := r.allow("hostile", now); apierr.CodeOf(err) != apierr.QuotaExceeded {
		t.Fatalf("past the burst: got %v, want quota_exceeded", err)
	}
	if err := r.allow("other", now); err != nil {
		t.Fatalf("another namespace: %v", err)
	}
	// 100 ms at 10 a second gives one token back.
	if err := r.allow("hostile", now.Add(100*time.Millisecond)); err != nil {
		t.Fatalf("after refill: %v", err)
	}
	// Idle namespaces' buckets are dropped by the sweep a minute on.
	if err := r.allow("third", now.Add(2*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if _, ok := r.buckets["other"]; ok || len(r.buckets) != 1 {
		t.Fatalf("after the sweep: %d buckets, want only the one just used", len(r.buckets))
	}
}

func TestReadUploadBudget(t *testing.T) {
	g := &Gateway{uploads: newUploads()}
	body := strings.Repeat("b", 1000)
	req := httptest.NewRequest(http.MethodPost, "/v1/functions/f", strings.NewReader(body))
	b, release, err := g.readUpload(httptest.NewRecorder(), req, "bundle")
	if err != nil || string(b) != body {
		t.Fatalf("reading within the budget: %v", err)
	}
	// The declared length is what is reserved: the budget less it is free.
	if !g.uploads.TryAcquire(MaxUploadBytes - 1000) {
		t.Fatal("reserved more than the body's length")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	req = httptest.NewRequestWithContext(ctx, http.MethodPost, "/v1/functions/f", strings.NewReader(body))
	if _, _, err := g.readUpload(httptest.NewRecorder(), req, "bundle"); apierr.CodeOf(err) != apierr.Overloaded {
		t.Fatalf("with the budget spent: got %v, want overloaded", err)
	}
	release()
	g.uploads.Release(MaxUploadBytes - 1000)
	// A body longer than its Content-Length is refused.
	req = httptest.NewRequest(http.MethodPost, "/v1/functions/f", strings.NewReader(body))
	req.ContentLength = 10
	if _, _, err := g.readUpload(httptest.NewRecorder(), req, "bundle"); apierr.CodeOf(err) != apierr.PayloadTooLarge {
		t.Fatalf("a body over its Content-Length: got %v, want payload_too_large", err)
	}
	if !g.uploads.TryAcquire(MaxUploadBytes) {
		t.Fatal("a refused read kept its reservation")
	}
}
