package gateway

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/cloister-faas/cloister/internal/bus"
	"github.com/cloister-faas/cloister/internal/wire"
)

// gateways is what this gateway knows of the others: their announcements
// on bus.SubjectGatewayStatus. Gateways hold no state; this is for
// GET /v1/cluster only.
type gateways struct {
	mu   sync.Mutex
	self wire.GatewayStatus
	seen map[string]wire.GatewayStatus
}

// startAnnouncing announces this gateway every bus.StatusInterval until
// its NATS connection closes, and follows the others' announcements.
func (g *Gateway) startAnnouncing() {
	nc := g.cfg.Conn
	if nc == nil {
		return
	}
	id := g.cfg.ID
	if id == "" {
		b := make([]byte, 6)
		rand.Read(b)
		id = "gw-" + hex.EncodeToString(b)
	}
	g.gws.self = wire.GatewayStatus{ID: id, URL: g.cfg.URL}
	g.gws.seen = map[string]wire.GatewayStatus{}
	_, err := nc.Subscribe(bus.SubjectGatewayStatus, func(m *nats.Msg) {
		var st wire.GatewayStatus
		if json.Unmarshal(m.Data, &st) != nil || st.ID == "" || len(st.ID) > 128 || len(st.URL) > 512 {
			return
		}
		st.LastSeen, st.Self = time.Now().UTC(), false
		g.gws.mu.Lock()
		defer g.gws.mu.Unlock()
		if len(g.gws.seen) < 1024 || g.gws.seen[st.ID].ID != "" {
			g.gws.seen[st.ID] = st
		}
	})
	if err != nil {
		// The cluster view then lists this gateway alone; serving goes on.
		g.log.Error("following other gateways' announcements", "err", err)
	}
	announce := func() {
		g.gws.mu.Lock()
		b, _ := json.Marshal(g.gws.self) // two strings: Marshal cannot fail
		g.gws.mu.Unlock()
		// Best effort: the next tick announces again.
		_ = nc.Publish(bus.SubjectGatewayStatus, b)
	}
	announce()
	go func() {
		t := time.NewTicker(bus.StatusInterval)
		defer t.Stop()
		for range t.C {
			if nc.IsClosed() {
				return
			}
			announce()
		}
	}()
}

// SetURL sets the URL this gateway announces, once it listens.
func (g *Gateway) SetURL(u string) {
	g.gws.mu.Lock()
	g.gws.self.URL = u
	g.gws.mu.Unlock()
}

// cluster answers GET /v1/cluster (a platform key): the active coordinator and its
// standbys, the gateways and workers heard from recently, and the NATS
// cluster's health as this gateway's connection sees it.
func (g *Gateway) cluster(w http.ResponseWriter, r *http.Request, p *Principal) error {
	if err := p.needPlatform("the cluster's status"); err != nil {
		return err
	}
	st := wire.ClusterStatus{Gateways: []wire.GatewayStatus{}, Workers: []wire.ClusterWorker{}}
	ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
	defer cancel()
	var cs wire.CoordinatorStatus
	if err := bus.Call(ctx, g.cfg.Conn, bus.SubjectCoordStatus, struct{}{}, &cs); err != nil {
		st.CoordinatorError = err.Error()
	} else {
		st.Coordinator = &cs
	}

	now := time.Now()
	stale := 3 * bus.StatusInterval
	g.gws.mu.Lock()
	self := g.gws.self
	self.Self, self.LastSeen = true, now.UTC()
	st.Gateways = append(st.Gateways, self)
	for id, gw := range g.gws.seen {
		if now.Sub(gw.LastSeen) > stale {
			delete(g.gws.seen, id)
			continue
		}
		if id != self.ID {
			st.Gateways = append(st.Gateways, gw)
		}
	}
	g.gws.mu.Unlock()
	slices.SortFunc(st.Gateways, func(a, b wire.GatewayStatus) int { return strings.Compare(a.ID, b.ID) })

	// A worker's TEE kind is what its certificate says, once it opens
	// under the coordinator's key.
	doc, derr := g.coordinatorDoc(ctx)
	g.pool.mu.Lock()
	for id, pw := range g.pool.workers {
		if now.Sub(pw.seen) > workerStale {
			continue
		}
		kind := ""
		if derr == nil {
			if w, err := g.certs.Open(pw.st.Certificate, doc.IdentityKey); err == nil {
				kind = string(w.TEE)
			}
		}
		st.Workers = append(st.Workers, wire.ClusterWorker{ID: id, TEE: kind, Capacity: pw.st.Capacity, Free: pw.st.Free, LastSeen: pw.seen.UTC()})
	}
	g.pool.mu.Unlock()
	slices.SortFunc(st.Workers, func(a, b wire.ClusterWorker) int { return strings.Compare(a.ID, b.ID) })

	st.NATS = g.natsStatus(ctx)
	writeJSON(w, http.StatusOK, st)
	return nil
}

// natsStatus reports the connection's servers and the replicas of the
// registry bucket's stream, which every role uses.
func (g *Gateway) natsStatus(ctx context.Context) wire.NATSStatus {
	nc := g.cfg.Conn
	ns := wire.NATSStatus{Connected: nc.ConnectedUrlRedacted(), Servers: nc.Servers()}
	if g.cfg.Stores == nil || g.cfg.Stores.Registry == nil {
		return ns
	}
	info, err := g.cfg.Stores.JS.Stream(ctx, "KV_"+bus.BucketRegistry)
	if err != nil {
		ns.Error = err.Error()
		return ns
	}
	si, err := info.Info(ctx)
	if err != nil {
		ns.Error = err.Error()
		return ns
	}
	if c := si.Cluster; c != nil {
		ns.Leader = c.Leader
		if c.Leader != "" {
			ns.Replicas = append(ns.Replicas, wire.NATSServer{Name: c.Leader, Leader: true, Current: true})
		}
		for _, p := range c.Replicas {
			ns.Replicas = append(ns.Replicas, wire.NATSServer{Name: p.Name, Current: p.Current, Offline: p.Offline,
				ActiveMS: p.Active.Milliseconds(), Lag: p.Lag})
		}
	}
	return ns
}
