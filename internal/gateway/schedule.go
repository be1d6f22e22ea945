package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/bus"
	"github.com/cloister-faas/cloister/internal/certs"
	"github.com/cloister-faas/cloister/internal/registry"
	"github.com/cloister-faas/cloister/internal/tee"
	"github.com/cloister-faas/cloister/internal/wire"
)

// workerStale is how long an advertisement counts (three missed intervals).
const workerStale = 6 * time.Second

// pool is the gateway's view of the workers, from their advertisements.
// It only steers traffic: the gateway is untrusted, and each worker and
// the coordinator's key release enforce the function's TEE policy again.
type pool struct {
	mu      sync.Mutex
	workers map[string]*poolWorker
	next    int // rotates ties
}

type poolWorker struct {
	st   wire.WorkerStatus
	seen time.Time
}

// update records an advertisement and reports whether it shows a worker
// or certificate the pool did not know (so the admitted list may be stale).
func (p *pool) update(b []byte) bool {
	var st wire.WorkerStatus
	if json.Unmarshal(b, &st) != nil || st.WorkerID == "" || strings.ContainsAny(st.WorkerID, ". *>") {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.workers == nil {
		p.workers = map[string]*poolWorker{}
	}
	old := p.workers[st.WorkerID]
	p.workers[st.WorkerID] = &poolWorker{st: st, seen: time.Now()}
	return old == nil || !bytes.Equal(old.st.Certificate.Body, st.Certificate.Body)
}

// forget drops a worker that no longer answers.
func (p *pool) forget(id string) {
	p.mu.Lock()
	delete(p.workers, id)
	p.mu.Unlock()
}

// startScheduling follows worker advertisements and manifest changes, and
// asks the workers to advertise at once; and it follows the buckets that
// invocations read.
func (g *Gateway) startScheduling() {
	if g.cfg.Conn == nil {
		return
	}
	// Subscribe fails only on a closed or draining connection, where the
	// gateway serves nothing anyway; the log keeps the cause.
	if _, err := g.cfg.Conn.Subscribe(bus.SubjectWorkerStatus, func(m *nats.Msg) {
		if g.pool.update(m.Data) {
			g.dropAttestation(false)
		}
	}); err != nil {
		g.log.Error("following worker advertisements", "err", err)
	}
	if _, err := g.cfg.Conn.Subscribe(bus.SubjectManifestChanged, func(*nats.Msg) { g.dropAttestation(true) }); err != nil {
		g.log.Error("following manifest changes", "err", err)
	}
	// Best effort: workers also advertise every AdvertiseInterval.
	_ = g.cfg.Conn.Publish(bus.SubjectWorkersPing, nil)
	// Lookups from memory while the registry's watch runs; while it does
	// not (the follower starts it again, and logs why), every lookup reads
	// the store.
	if g.cfg.Stores != nil && g.cfg.Stores.Registry != nil {
		if err := g.reg.Follow(context.Background(), g.log); err != nil {
			g.log.Warn("following the registry; lookups read the store until a watch starts", "err", err)
		}
	}
	// Likewise for what an OpenWhisk invocation reads besides the registry.
	for _, f := range []struct {
		what   string
		f      *bus.Follower
		prefix string
	}{{"OpenWhisk actions", g.owActions, "a."}, {"sequences", g.sequences, "s."}} {
		if f.f == nil {
			continue
		}
		if err := f.f.Follow(context.Background(), f.prefix, g.log); err != nil {
			g.log.Warn("following a bucket; its reads go to the store until a watch starts", "bucket", f.what, "err", err)
		}
	}
}

// staleAttestation is how long the gateway serves its last attestation
// document when no coordinator answers.
const staleAttestation = 2 * time.Minute

// coordinatorDoc returns the coordinator's attestation document, cached
// for 30 s (or until a manifest change), and up to staleAttestation while
// no coordinator answers.
func (g *Gateway) coordinatorDoc(ctx context.Context) (*wire.Attestation, error) {
	g.attMu.Lock()
	defer g.attMu.Unlock()
	if g.att == nil || time.Since(g.attTime) > 30*time.Second {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		var a wire.Attestation
		if err := bus.Call(ctx, g.cfg.Conn, bus.SubjectAttestation, struct{}{}, &a); err != nil {
			// While coordinators fail over nobody answers for a few
			// seconds: the last document is still the deployment's, and
			// clients check its evidence's age against their policy.
			if g.attLast != nil && time.Since(g.attLastTime) < staleAttestation && apierr.CodeOf(err) == apierr.Unavailable {
				return g.attLast, nil
			}
			return nil, err
		}
		g.att, g.attTime = &a, time.Now()
		g.attLast, g.attLastTime = g.att, g.attTime
	}
	return g.att, nil
}

// dropAttestation makes the next coordinatorDoc ask the coordinator (a
// worker joined: its certificate is in the new document). A manifest
// change also forgets the last document, which binds the old manifest.
func (g *Gateway) dropAttestation(manifestChanged bool) {
	g.attMu.Lock()
	g.att = nil
	if manifestChanged {
		g.attLast = nil
	}
	g.attMu.Unlock()
}

// candidate is an admitted worker that may run a function.
type candidate struct {
	id   string
	warm bool
	free int
}

// pick chooses the worker for a function version: only admitted workers
// whose certified TEE kind and TCB satisfy the function's policy, then
// those holding it warm, then the most free capacity. With no worker
// advertising at all and no TEE policy, it falls back to the shared queue.
func (g *Gateway) pick(ctx context.Context, rec *registry.Record) (string, error) {
	fc := &rec.Function
	hasPolicy := len(fc.AllowTEE) > 0 || len(fc.MinTCB) > 0
	g.pool.mu.Lock()
	empty := len(g.pool.workers) == 0
	g.pool.mu.Unlock()
	if empty && !hasPolicy {
		return bus.SubjectInvoke, nil
	}
	doc, err := g.coordinatorDoc(ctx)
	if err != nil {
		return "", err
	}
	admitted := make(map[string]bool, len(doc.Workers))
	for _, s := range doc.Workers {
		if w, err := g.certs.Open(s, doc.IdentityKey); err == nil {
			admitted[w.WorkerID] = true
		}
	}
	now := time.Now()
	id := fmt.Sprintf("%s/%s/%d", fc.Namespace, fc.Name, fc.Version)
	g.pool.mu.Lock()
	defer g.pool.mu.Unlock()
	var cands []candidate
	var refused []*certs.Worker // admitted, but outside the policy
	for wid, pw := range g.pool.workers {
		if now.Sub(pw.seen) > workerStale {
			delete(g.pool.workers, wid)
			continue
		}
		if !admitted[wid] {
			continue
		}
		w, err := g.certs.Open(pw.st.Certificate, doc.IdentityKey)
		if err != nil || w.WorkerID != wid || w.ValidAt(now) != nil {
			continue
		}
		if !satisfies(fc, w) {
			refused = append(refused, w)
			continue
		}
		cands = append(cands, candidate{id: wid, warm: slices.Contains(pw.st.Warm, id), free: pw.st.Free})
	}
	if len(cands) == 0 {
		if len(refused) == 0 && !hasPolicy {
			return bus.SubjectInvoke, nil
		}
		seen := make([]string, len(refused))
		for i, w := range refused {
			seen[i] = fmt.Sprintf("%s (%s, TCB %s)", w.WorkerID, w.TEE, w.TCB)
		}
		slices.Sort(seen)
		return "", apierr.New(apierr.TEEPolicy,
			"no admitted worker satisfies the TEE policy of %s (allow %s, min_tcb %s); admitted workers: %s",
			id, allowString(fc.AllowTEE), minString(fc.MinTCB), orNone(seen))
	}
	g.pool.next++
	rank(cands, g.pool.next)
	best := cands[0].id
	if pw := g.pool.workers[best]; pw.st.Free > 0 {
		pw.st.Free-- // until the next advertisement says otherwise
	}
	return bus.WorkerSubject(best), nil
}

// rank orders candidates best first: warm before cold, then more free
// capacity, then a rotation (rot) that spreads ties.
func rank(cands []candidate, rot int) {
	sort.SliceStable(cands, func(i, j int) bool {
		a, b := cands[i], cands[j]
		if a.warm != b.warm {
			return a.warm
		}
		if a.free != b.free {
			return a.free > b.free
		}
		return (hashIndex(a.id)+rot)%1024 < (hashIndex(b.id)+rot)%1024
	})
}

func satisfies(fc *certs.Function, w *certs.Worker) bool { return fc.Admits(w) == nil }

func hashIndex(s string) int {
	h := 0
	for _, c := range s {
		h = h*31 + int(c)
	}
	if h < 0 {
		h = -h
	}
	return h % 1024
}

func allowString(k []tee.Kind) string {
	if len(k) == 0 {
		return "any"
	}
	s := make([]string, len(k))
	for i, x := range k {
		s[i] = string(x)
	}
	return strings.Join(s, ",")
}

func minString(m map[tee.Kind]string) string {
	if len(m) == 0 {
		return "none"
	}
	var s []string
	for k, v := range m {
		s = append(s, string(k)+"="+v)
	}
	slices.Sort(s)
	return strings.Join(s, ";")
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}
