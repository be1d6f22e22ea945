package node_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cloister-faas/cloister/client"
	"github.com/cloister-faas/cloister/internal/bundle"
	"github.com/cloister-faas/cloister/internal/bus"
	"github.com/cloister-faas/cloister/internal/node"
)

// kvReq is a request to the kv fixture (internal/sandbox/testdata/kv.wat).
func kvReq(op byte, key, rest string) []byte {
	return append(append([]byte{op, byte(len(key))}, key...), rest...)
}

// kvInvoke invokes the kv fixture and splits its answer into the host
// function's result and the data after it.
func kvInvoke(t *testing.T, c *client.Client, name string, in []byte) (int32, []byte, error) {
	t.Helper()
	for {
		res, err := c.Invoke(context.Background(), name, in, client.InvokeOptions{})
		var ce *client.Error
		if errors.As(err, &ce) && ce.Code == "concurrency_limit" {
			continue
		}
		if err != nil {
			return 0, nil, err
		}
		if len(res.Output) < 4 {
			t.Fatalf("short output %q", res.Output)
		}
		return int32(binary.LittleEndian.Uint32(res.Output)), res.Output[4:], nil
	}
}

func stateBucket(t *testing.T, e *env) jetstream.KeyValue {
	t.Helper()
	nc, err := e.n.Bus().Connect("tamperer")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	kv, err := js.KeyValue(context.Background(), bus.BucketState)
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

// changedKey returns the one key of the bucket whose revision moved after
// put ran, and the bytes it held before (nil if new).
func changedKey(t *testing.T, kv jetstream.KeyValue, put func()) string {
	t.Helper()
	ctx := context.Background()
	before := map[string]uint64{}
	if l, err := kv.ListKeys(ctx); err == nil {
		for k := range l.Keys() {
			en, _ := kv.Get(ctx, k)
			before[k] = en.Revision()
		}
	}
	put()
	l, err := kv.ListKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var changed []string
	for k := range l.Keys() {
		en, _ := kv.Get(ctx, k)
		if en.Revision() != before[k] {
			changed = append(changed, k)
		}
	}
	if len(changed) != 1 {
		t.Fatalf("%d keys changed, want 1", len(changed))
	}
	return changed[0]
}

// TestStateEndToEnd: a reactor granted state reads and writes it through
// the platform; the bucket holds only ciphertext; rollback, swap and replay
// by a host that edits the bucket fail the invocation with
// state_integrity; concurrent increments lose no update; and the state
// survives a restart of the node.
func TestStateEndToEnd(t *testing.T) {
	e := start(t)
	wasm := fixture(t, "kv.wasm")
	e.deploy("kv", wasm, func(m *bundle.Manifest) { m.ABI = bundle.ABIReactor; m.Capabilities.State = true })
	e.deploy("nokv", wasm, func(m *bundle.Manifest) { m.ABI = bundle.ABIReactor })
	kv := stateBucket(t, e)
	ctx := context.Background()
	marker := randomMarker()

	if c, _, err := kvInvoke(t, e.c, "nokv", kvReq('p', "k", "v")); err != nil || c != -5 {
		t.Fatalf("a function without the state capability: %d %v", c, err)
	}
	balKey := changedKey(t, kv, func() {
		if c, _, err := kvInvoke(t, e.c, "kv", kvReq('p', "balance", string(marker))); err != nil || c != 0 {
			t.Fatalf("put: %d %v", c, err)
		}
	})
	if c, v, err := kvInvoke(t, e.c, "kv", kvReq('g', "balance", "")); err != nil || !bytes.Equal(v, marker) || int(c) != len(marker) {
		t.Fatalf("get: %d %q %v", c, v, err)
	}
	if leaks(e.bus.bytes(), marker) {
		t.Fatal("the state value crossed the bus in the clear")
	}
	old, _ := kv.Get(ctx, balKey)
	oldValue := bytes.Clone(old.Value())
	if leaks(oldValue, marker) || bytes.Contains([]byte(balKey), []byte("balance")) {
		t.Fatal("the bucket holds the key or the value in the clear")
	}
	wantIntegrity := func(what string, in []byte) {
		t.Helper()
		_, _, err := kvInvoke(t, e.c, "kv", in)
		var ce *client.Error
		if !errors.As(err, &ce) || ce.Code != "state_integrity" {
			t.Fatalf("%s: got %v, want state_integrity", what, err)
		}
	}

	// Rollback: the host serves the older value.
	kvInvoke(t, e.c, "kv", kvReq('p', "balance", "0"))
	if _, err := kv.Put(ctx, balKey, oldValue); err != nil {
		t.Fatal(err)
	}
	wantIntegrity("rollback", kvReq('g', "balance", ""))

	// Swap: another key's value under this key.
	aliceKey := changedKey(t, kv, func() { kvInvoke(t, e.c, "kv", kvReq('p', "alice", "admin")) })
	bobKey := changedKey(t, kv, func() { kvInvoke(t, e.c, "kv", kvReq('p', "bob", "guest")) })
	a, _ := kv.Get(ctx, aliceKey)
	kv.Put(ctx, bobKey, a.Value())
	wantIntegrity("swap", kvReq('g', "bob", ""))

	// Replay: a deleted key brought back.
	sessKey := changedKey(t, kv, func() { kvInvoke(t, e.c, "kv", kvReq('p', "session", "token")) })
	s, _ := kv.Get(ctx, sessKey)
	sess := bytes.Clone(s.Value())
	if c, _, err := kvInvoke(t, e.c, "kv", kvReq('d', "session", "")); err != nil || c != 1 {
		t.Fatalf("delete: %d %v", c, err)
	}
	kv.Put(ctx, sessKey, sess)
	wantIntegrity("replay", kvReq('g', "session", ""))

	// Compare-and-set: concurrent increments from many invocations lose
	// no update.
	const goroutines, each = 6, 10
	var wg sync.WaitGroup
	for range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				if c, _, err := kvInvoke(t, e.c, "kv", kvReq('i', "counter", "")); err != nil || c != 1 {
					t.Errorf("increment: %d %v", c, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if c, v, err := kvInvoke(t, e.c, "kv", kvReq('g', "counter", "")); err != nil || c != 4 || binary.LittleEndian.Uint32(v) != goroutines*each {
		t.Fatalf("counter: %d %v %v, want %d", c, v, err, goroutines*each)
	}

	// Durability: restart the node on the same directory.
	kvInvoke(t, e.c, "kv", kvReq('p', "durable", "yes"))
	if err := e.n.Close(); err != nil {
		t.Fatal(err)
	}
	n, err := node.Start(ctx, node.Options{Dir: e.dir, Addr: "127.0.0.1:0", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	c2, err := client.New(n.URL, n.Token, clientPolicy(n.Policy), client.WithCallerKey(e.owner))
	if err != nil {
		t.Fatal(err)
	}
	if c, v, err := kvInvoke(t, c2, "kv", kvReq('g', "durable", "")); err != nil || c != 3 || string(v) != "yes" {
		t.Fatalf("after a restart: %d %q %v", c, v, err)
	}
	if c, v, err := kvInvoke(t, c2, "kv", kvReq('g', "counter", "")); err != nil || c != 4 || binary.LittleEndian.Uint32(v) != goroutines*each {
		t.Fatalf("counter after a restart: %d %v %v", c, v, err)
	}
	// The tampered key is still caught after the restart.
	_, _, err = kvInvoke(t, c2, "kv", kvReq('g', "bob", ""))
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Code != "state_integrity" {
		t.Fatalf("swap after a restart: %v", err)
	}
}

// TestCounterExample: the C SDK's state helpers through the platform, with
// examples/reactor-counter-c: concurrent increments of one counter from
// many invocations lose no update.
func TestCounterExample(t *testing.T) {
	e := start(t)
	e.deploy("counter", example(t, "reactor-counter-c"), func(m *bundle.Manifest) { m.ABI = bundle.ABIReactor; m.Capabilities.State = true })
	invoke := func(in string) string {
		out, err := invokeBusy(e.c, "counter", in)
		if err != nil {
			t.Errorf("invoke %q: %v", in, err)
		}
		return out
	}
	if got := invoke("?visits"); got != "0" {
		t.Fatalf("a new counter reads %q", got)
	}
	const goroutines, each = 8, 8
	seen := make(chan string, goroutines*each)
	var wg sync.WaitGroup
	for range goroutines {
		wg.Go(func() {
			for range each {
				seen <- invoke("visits")
			}
		})
	}
	wg.Wait()
	close(seen)
	// Every increment returned a distinct value: none was lost or doubled.
	got := map[string]bool{}
	for v := range seen {
		if got[v] {
			t.Fatalf("two increments returned %s", v)
		}
		got[v] = true
	}
	if len(got) != goroutines*each || invoke("?visits") != strconv.Itoa(goroutines*each) {
		t.Fatalf("%d distinct results; the counter reads %s, want %d", len(got), invoke("?visits"), goroutines*each)
	}
}

// TestKVGoExample: the Go SDK's state helpers through the platform, with
// examples/reactor-kv-go: put, get, list, delete, and concurrent adds by
// compare-and-set that lose no update; the state survives in the sealed
// bucket, never in the clear.
func TestKVGoExample(t *testing.T) {
	e := start(t)
	e.deploy("docs", example(t, "reactor-kv-go"), func(m *bundle.Manifest) { m.ABI = bundle.ABIReactor; m.Capabilities.State = true })
	invoke := func(in string) (string, error) { return invokeBusy(e.c, "docs", in) }

	marker := "patient-" + hex.EncodeToString(randomMarker())
	for _, c := range []struct{ in, want string }{
		{`{"op":"put","key":"record/1","value":"` + marker + `"}`, `{"ok":true}`},
		{`{"op":"put","key":"record/2","value":"b"}`, `{"ok":true}`},
		{`{"op":"put","key":"other","value":"c"}`, `{"ok":true}`},
		{`{"op":"get","key":"record/1"}`, `{"found":true,"value":"` + marker + `"}`},
		{`{"op":"list","key":"record/"}`, `{"keys":["record/1","record/2"]}`},
		{`{"op":"delete","key":"record/2"}`, `{"deleted":true}`},
		{`{"op":"get","key":"record/2"}`, `{"found":false,"value":""}`},
	} {
		if got, err := invoke(c.in); err != nil || got != c.want {
			t.Fatalf("%s: got %s %v, want %s", c.in, got, err, c.want)
		}
	}
	const goroutines, each = 6, 8
	concurrently(t, goroutines, each, func() error {
		_, err := invoke(`{"op":"add","key":"count"}`)
		return err
	})
	if got, err := invoke(`{"op":"get","key":"count"}`); err != nil || got != `{"found":true,"value":"`+strconv.Itoa(goroutines*each)+`"}` {
		t.Fatalf("after %d concurrent adds: %s %v", goroutines*each, got, err)
	}
	var ce *client.Error
	if _, err := invoke(`{"op":"add","key":"other"}`); !errors.As(err, &ce) || ce.Code != "function_exit" {
		t.Fatalf("add to a non-integer: %v", err)
	}
	kv := stateBucket(t, e)
	keys, err := kv.ListKeys(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for k := range keys.Keys() {
		v, err := kv.Get(context.Background(), k)
		if err != nil {
			continue
		}
		if leaks(v.Value(), []byte(marker)) || strings.Contains(k, "record") {
			t.Fatal("the bucket holds a key or a value in the clear")
		}
	}
}

// invokeBusy invokes name with in and returns the output, trying again
// while the function is at its concurrency limit (the tests' concurrent
// callers outnumber its sandboxes).
func invokeBusy(c *client.Client, name, in string) (string, error) {
	for {
		res, err := c.Invoke(context.Background(), name, []byte(in), client.InvokeOptions{})
		var ce *client.Error
		if errors.As(err, &ce) && ce.Code == "concurrency_limit" {
			continue
		}
		if err != nil {
			return "", err
		}
		return string(res.Output), nil
	}
}

// concurrently runs op each times in each of n goroutines and reports its
// errors (a goroutine stops at its first).
func concurrently(t *testing.T, n, each int, op func() error) {
	t.Helper()
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			for range each {
				if err := op(); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}
