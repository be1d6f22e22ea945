package bus_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cloister-faas/cloister/internal/bus"
)

// freePort returns a loopback port nothing listens on (for the routes,
// which every node must know before any starts).
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startCluster starts three JetStream nodes on loopback, routed to each
// other; they stop with the test.
func startCluster(t *testing.T) []*server.Server {
	t.Helper()
	ports := []int{freePort(t), freePort(t), freePort(t)}
	var routes []*url.URL
	for _, p := range ports {
		routes = append(routes, &url.URL{Scheme: "nats", Host: fmt.Sprintf("127.0.0.1:%d", p)})
	}
	nodes := make([]*server.Server, len(ports))
	for i, p := range ports {
		opts := &server.Options{
			ServerName: fmt.Sprintf("n%d", i), Host: "127.0.0.1", Port: -1,
			JetStream: true, StoreDir: t.TempDir(), NoSigs: true, NoLog: true,
			Cluster: server.ClusterOpts{Name: "replay", Host: "127.0.0.1", Port: p},
			Routes:  routes,
		}
		ns, err := server.NewServer(opts)
		if err != nil {
			t.Fatal(err)
		}
		ns.Start()
		t.Cleanup(ns.Shutdown)
		nodes[i] = ns
	}
	for _, ns := range nodes {
		if !ns.ReadyForConnections(10 * time.Second) {
			t.Fatal("a node did not become ready")
		}
	}
	return nodes
}

// TestReplayLeaderChange: on a three-node cluster, with the replay log
// replicated three times, an id recorded before the stream's leader
// stops is still refused by the leader elected after it, whose own
// records were written as a follower.
func TestReplayLeaderChange(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-node NATS cluster")
	}
	nodes := startCluster(t)
	var urls []string
	for _, ns := range nodes {
		urls = append(urls, ns.ClientURL())
	}
	nc, err := nats.Connect(urls[0]+","+urls[1]+","+urls[2], nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	// No deadline: each JetStream request then waits its own default
	// time, so that one sent before the nodes elect a meta leader, which
	// gets no answer, is tried again rather than waited on to the end.
	ctx := context.Background()
	deadline := time.Now().Add(2 * time.Minute)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	st, err := bus.OpenStores(ctx, nc, 3, quiet())
	if err != nil {
		t.Fatal(err)
	}
	before := []string{bus.ReplayID(digest(1)), bus.ReplayID(digest(2))}
	for _, id := range before {
		if err := st.Replay.Add(ctx, id, []byte("first")); err != nil {
			t.Fatal(err)
		}
	}
	str, err := js.Stream(ctx, bus.StreamReplay)
	if err != nil {
		t.Fatal(err)
	}
	if ci := str.CachedInfo().Cluster; ci == nil || len(ci.Replicas) != 2 {
		t.Fatalf("the replay log is not replicated three times: %+v", ci)
	}
	old := str.CachedInfo().Cluster.Leader
	for _, ns := range nodes {
		if ns.Name() == old {
			ns.Shutdown()
		}
	}
	for {
		if time.Now().After(deadline) {
			t.Fatal("no new leader of the replay log within 2 minutes")
		}
		if info, err := str.Info(ctx); err == nil && info.Cluster != nil && info.Cluster.Leader != "" && info.Cluster.Leader != old {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, id := range before {
		var err error
		for err = st.Replay.Add(ctx, id, []byte("again")); err != nil && !errors.Is(err, bus.ErrReplayed) && time.Now().Before(deadline); err = st.Replay.Add(ctx, id, []byte("again")) {
			time.Sleep(100 * time.Millisecond) // the client reconnecting, the stream catching up
		}
		if !errors.Is(err, bus.ErrReplayed) {
			t.Fatalf("an id recorded before the leader %s stopped: %v, want ErrReplayed", old, err)
		}
	}
	if err := st.Replay.Add(ctx, bus.ReplayID(digest(3)), []byte("new")); err != nil {
		t.Fatalf("a new id after the leader change: %v", err)
	}
}
