package gateway

import (
	"context"
	"io"
	"net/http"
	"sync"
	"time"

	"golang.org/x/sync/semaphore"
	"golang.org/x/time/rate"

	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/trigger"
)

// Quotas bound what one namespace may keep and send through the gateway.
// They protect capacity (the threat model lets the gateway do that, and
// nothing more). Zero fields take the defaults below.
type Quotas struct {
	// Rate is the requests per second one namespace may make through one
	// gateway, over a burst of Burst (defaults DefaultRate, 2 × Rate).
	// Each gateway counts its own: N gateways allow N times as much.
	Rate  float64
	Burst int
	// Functions is the most live functions per namespace.
	Functions int
	// Versions is the most live versions per function; delete the function
	// to start again from one.
	Versions int
	// CodeBytes bounds the bundle bytes of a namespace's live versions.
	CodeBytes int64
	// Triggers and Rules bound a namespace's triggers and rules.
	Triggers, Rules int
}

// Default quotas.
const (
	DefaultRate            = 1000
	DefaultFunctions       = 200
	DefaultVersions        = 100
	DefaultCodeBytes int64 = 4 << 30
)

func (q Quotas) withDefaults() Quotas {
	if q.Rate <= 0 {
		q.Rate = DefaultRate
	}
	if q.Burst <= 0 {
		q.Burst = int(2 * q.Rate)
	}
	if q.Functions <= 0 {
		q.Functions = DefaultFunctions
	}
	if q.Versions <= 0 {
		q.Versions = DefaultVersions
	}
	if q.CodeBytes <= 0 {
		q.CodeBytes = DefaultCodeBytes
	}
	if q.Triggers <= 0 {
		q.Triggers = trigger.DefaultMaxTriggers
	}
	if q.Rules <= 0 {
		q.Rules = trigger.DefaultMaxRules
	}
	return q
}

// rates keeps one token bucket per namespace. Buckets that are full (their
// namespace idle for a while) are dropped by a sweep, so the map holds only
// namespaces that sent requests recently.
type rates struct {
	limit rate.Limit
	burst int

	mu        sync.Mutex
	buckets   map[string]*rate.Limiter
	lastSweep time.Time
}

func newRates(q Quotas) *rates {
	return &rates{limit: rate.Limit(q.Rate), burst: q.Burst, buckets: map[string]*rate.Limiter{}}
}

// allow takes one token of ns's bucket, or refuses with quota_exceeded.
func (r *rates) allow(ns string, now time.Time) error {
	r.mu.Lock()
	if now.Sub(r.lastSweep) > time.Minute {
		for k, b := range r.buckets {
			if b.TokensAt(now) >= float64(r.burst) {
				delete(r.buckets, k)
			}
		}
		r.lastSweep = now
	}
	b, ok := r.buckets[ns]
	if !ok {
		b = rate.NewLimiter(r.limit, r.burst)
		r.buckets[ns] = b
	}
	r.mu.Unlock()
	if !b.AllowN(now, 1) {
		return apierr.New(apierr.QuotaExceeded, "namespace %q is over its request rate of %g per second (burst %d)", ns, float64(r.limit), r.burst)
	}
	return nil
}

// checkDeployQuota refuses a deploy of size bytes of function name in ns
// past the namespace's function, version or code-size quota.
func (g *Gateway) checkDeployQuota(ctx context.Context, ns, name string, size int64) error {
	q := g.quotas
	live, err := g.reg.LiveVersions(ctx, ns, name)
	if err != nil {
		return storeError("registry", err)
	}
	if live >= q.Versions {
		return apierr.New(apierr.QuotaExceeded, "function %q has %d live versions, its quota; delete the function to start again from one", name, live)
	}
	u, err := g.reg.Usage(ctx, ns)
	if err != nil {
		return storeError("registry", err)
	}
	if live == 0 && u.Functions >= q.Functions {
		return apierr.New(apierr.QuotaExceeded, "the namespace has %d functions, its quota; delete one first", u.Functions)
	}
	if u.Bytes+size > q.CodeBytes {
		return apierr.New(apierr.QuotaExceeded, "the namespace's live bundles take %d MiB; this one (%d KiB) would pass its quota of %d MiB",
			u.Bytes>>20, size>>10, q.CodeBytes>>20)
	}
	return nil
}

// Upload budget: the bytes of deploy bodies the gateway holds at once.
const (
	// MaxUploadBytes bounds the deploy bodies read and registered at
	// once, across all namespaces; further uploads wait their turn.
	MaxUploadBytes = 4 * MaxBundleBytes
	// uploadWait is the longest an upload waits for room before it is
	// refused with overloaded.
	uploadWait = 30 * time.Second
)

// readUpload reads a deploy body of at most MaxBundleBytes within the
// gateway's upload budget, which bounds the memory that concurrent large
// uploads take. It reserves the declared length (or the maximum, for a
// body of unknown length) before reading; release gives the reservation
// back once the body is no longer needed.
func (g *Gateway) readUpload(w http.ResponseWriter, r *http.Request, what string) (body []byte, release func(), err error) {
	weight := int64(MaxBundleBytes)
	if r.ContentLength > 0 && r.ContentLength < weight {
		weight = r.ContentLength
	}
	ctx, cancel := context.WithTimeout(r.Context(), uploadWait)
	defer cancel()
	if err := g.uploads.Acquire(ctx, weight); err != nil {
		return nil, nil, apierr.New(apierr.Overloaded, "the gateway is receiving %d MiB of uploads; try again later", MaxUploadBytes>>20)
	}
	release = func() { g.uploads.Release(weight) }
	body, err = io.ReadAll(http.MaxBytesReader(w, r.Body, weight))
	if err != nil {
		release()
		return nil, nil, apierr.New(apierr.PayloadTooLarge, "%s over %d bytes (or longer than its Content-Length)", what, weight)
	}
	return body, release, nil
}

// uploadBudget is the weighted semaphore behind readUpload.
type uploadBudget = *semaphore.Weighted

func newUploads() uploadBudget { return semaphore.NewWeighted(MaxUploadBytes) }
