package node_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cloister-faas/cloister/client"
	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/bundle"
	"github.com/cloister-faas/cloister/internal/bus"
	"github.com/cloister-faas/cloister/internal/certs"
	"github.com/cloister-faas/cloister/internal/node"
)

// build signs a bundle of module as the next version of name.
func (e *env) build(name string, module []byte, edit func(*bundle.Manifest)) []byte {
	e.t.Helper()
	v, err := e.c.NextVersion(context.Background(), name)
	if err != nil {
		e.t.Fatal(err)
	}
	m := bundle.DefaultManifest(name)
	m.Version, m.Namespace = v, e.namespace()
	if edit != nil {
		edit(&m)
	}
	b, err := bundle.Build(m, module, e.owner)
	if err != nil {
		e.t.Fatal(err)
	}
	return b
}

// openToAll makes a function callable in plaintext, and so by anyone:
// confidential optional, invoker policy any.
func openToAll(m *bundle.Manifest) {
	m.Confidential = bundle.ConfidentialOptional
	m.Invokers = &certs.Invokers{Kind: certs.InvokersAny}
}

// TestDeployIsAtomic: a reactor whose initialisation outlasts the deploy
// timeout (well within its own time limit) is refused with timeout and leaves nothing behind: the version
// before it is still served, the version number is not spent, and its
// bundle is gone from the object store.
func TestDeployIsAtomic(t *testing.T) {
	e := start(t, func(o *node.Options) { o.DeployTimeout = time.Second })
	ctx := context.Background()
	reactor := func(m *bundle.Manifest) { m.ABI = bundle.ABIReactor; m.Capabilities.Clock = true }
	e.deploy("svc", fixture(t, "reactor.wasm"), reactor)

	// Its own time limit (60 s) would let the init run; the deploy's does not.
	slow := e.build("svc", fixture(t, "slow_init.wasm"), func(m *bundle.Manifest) {
		reactor(m)
		m.Limits.TimeoutMS, m.Limits.Fuel = 60_000, 1<<62
	})
	var ce *client.Error
	t0 := time.Now()
	if _, err := e.c.Deploy(ctx, "svc", slow); !errors.As(err, &ce) || ce.Code != string(apierr.Timeout) {
		t.Fatalf("deploying a reactor whose init takes minutes with a 1 s deploy timeout: got %v, want timeout", err)
	}
	t.Logf("refused after %s", time.Since(t0))
	fi, err := e.c.Function(ctx, "svc", 0)
	if err != nil || fi.Version != 1 {
		t.Fatalf("latest after the failed deploy: %+v, %v; want v1", fi, err)
	}
	if res, err := e.c.Invoke(ctx, "svc", []byte("c"), client.InvokeOptions{}); err != nil || string(res.Output) != "11" || res.Version != 1 {
		t.Fatalf("v1 after the failed deploy: %v", err)
	}
	if v, err := e.c.NextVersion(ctx, "svc"); err != nil || v != 2 {
		t.Fatalf("next version after the failed deploy: %d, %v; want 2", v, err)
	}
	nc, err := e.n.Bus().Connect("inspector")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	objs, err := js.ObjectStore(ctx, bus.BucketBundles)
	if err != nil {
		t.Fatal(err)
	}
	stored, err := objs.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var svc []string
	for _, o := range stored {
		if strings.HasPrefix(o.Name, "default/svc/") {
			svc = append(svc, o.Name)
		}
	}
	if len(svc) != 1 {
		t.Errorf("bundles of svc after the failed deploy: %v, want only v1's", svc)
	}
	if fi := e.deploy("svc", fixture(t, "reactor.wasm"), reactor); fi.Version != 2 {
		t.Fatalf("the next deploy: v%d, want v2", fi.Version)
	}
}

// withCustomSection appends a custom section of n bytes to a module: a
// large module that costs little to compile.
func withCustomSection(module []byte, n int) []byte {
	name := "cloister-test-padding"
	body := binary.AppendUvarint(nil, uint64(len(name)))
	body = append(body, name...)
	payload := n - len(body)
	out := append([]byte(nil), module...)
	out = append(out, 0) // custom section id
	out = binary.AppendUvarint(out, uint64(len(body)+payload))
	out = append(out, body...)
	return append(out, make([]byte, payload)...)
}

// TestConcurrentLargeDeploys: six deploys of 40 MB modules at once all
// succeed, each to its own function, and each is then served.
func TestConcurrentLargeDeploys(t *testing.T) {
	if testing.Short() {
		t.Skip("240 MB of uploads")
	}
	e := start(t)
	ctx := context.Background()
	if raceEnabled {
		// The race detector slows the bus and the loads tenfold: 240 MB
		// then outlasts JetStream's acks and the calls' deadlines. The
		// plain run of the suite covers it.
		t.Skip("240 MB of uploads under the race detector")
	}
	const n, size = 6, 40 << 20
	bundles := make([][]byte, n)
	for i := range bundles {
		bundles[i] = e.build(fmt.Sprintf("big%d", i), withCustomSection(fixture(t, "echo.wasm"), size+i), nil)
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range bundles {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = e.c.Deploy(ctx, fmt.Sprintf("big%d", i), bundles[i])
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("deploy %d of %d: %v", i+1, n, err)
			continue
		}
		// The workers load the six versions one compile at a time; on a
		// machine busy with other tests, a call can outlast the gateway's
		// deadline (the function's timeout + 30 s) while the loads before
		// it finish. It must be served once they have.
		res, err := e.c.Invoke(ctx, fmt.Sprintf("big%d", i), []byte("hi"), client.InvokeOptions{})
		var ce *client.Error
		if errors.As(err, &ce) && ce.Code == string(apierr.Timeout) {
			t.Logf("invoking big%d timed out while the versions load (%v); once more", i, err)
			res, err = e.c.Invoke(ctx, fmt.Sprintf("big%d", i), []byte("hi"), client.InvokeOptions{})
		}
		if err != nil || string(res.Output) != "hi" {
			t.Errorf("invoking big%d: %v", i, err)
		}
	}
}
