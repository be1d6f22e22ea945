package node_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cloister-faas/cloister/client"
	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/bus"
	"github.com/cloister-faas/cloister/internal/seal"
	"github.com/cloister-faas/cloister/internal/wire"
)

// waitActivations waits until fn has n finished activations from trigger.
func waitActivations(t *testing.T, e *env, fn, trigger string, n int) []*client.Activation {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		list, err := e.c.Activations(context.Background(), 50, fn)
		if err != nil {
			t.Fatal(err)
		}
		var done []*client.Activation
		for _, a := range list {
			if a.Trigger == trigger && wire.FinalStatus(a.Status) {
				done = append(done, a)
			}
		}
		if len(done) >= n {
			return done
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d finished activations of %s from %s, want %d", len(done), fn, trigger, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestTriggersFire fires a function from a cron schedule, from a NATS
// subject and over the API, through rules; a disabled rule fires nothing.
func TestTriggersFire(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	e.deploy("open-echo", fixture(t, "echo.wasm"), openToAll)

	if _, err := e.c.PutTrigger(ctx, client.Trigger{Name: "tick", Cron: "* * * * * *", Payload: json.RawMessage(`{"tick":true}`)}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.c.PutRule(ctx, client.Rule{Name: "on-tick", Trigger: "tick", Function: "open-echo", Active: true}); err != nil {
		t.Fatal(err)
	}
	ticks := waitActivations(t, e, "open-echo", "tick", 2)
	if ticks[0].Response.Sealed || string(ticks[0].Response.Result) != `{"tick":true}` || ticks[0].Rule != "on-tick" || ticks[0].Status != wire.StatusSuccess {
		t.Fatalf("cron activation: %+v", ticks[0])
	}
	if err := e.c.DeleteTrigger(ctx, "tick"); err != nil {
		t.Fatal(err)
	}

	// A subject is relative to the namespace's event space.
	if tr, err := e.c.PutTrigger(ctx, client.Trigger{Name: "orders", Subject: "shop.orders.*"}); err != nil || tr.Subject != "events.default.shop.orders.*" {
		t.Fatalf("subject trigger: %+v, %v; want subject events.default.shop.orders.*", tr, err)
	}
	if _, err := e.c.PutRule(ctx, client.Rule{Name: "on-order", Trigger: "orders", Function: "open-echo", Active: true}); err != nil {
		t.Fatal(err)
	}
	nc, err := e.n.Bus().Connect("publisher")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	// The subscription is made when the runner sees the trigger: publish
	// until the first activation appears.
	deadline := time.Now().Add(20 * time.Second)
	for {
		m := nats.NewMsg("events.default.shop.orders.eu")
		m.Data = []byte(`{"order":42}`)
		m.Header.Set(nats.MsgIdHdr, "order-42")
		if err := nc.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
		nc.Flush()
		list, _ := e.c.Activations(ctx, 50, "open-echo")
		seen := false
		for _, a := range list {
			seen = seen || a.Trigger == "orders"
		}
		if seen || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	got := waitActivations(t, e, "open-echo", "orders", 1)
	if string(got[0].Response.Result) != `{"order":42}` {
		t.Fatalf("subject activation: %+v", got[0])
	}
	// The message id makes the event idempotent: republishing it created nothing new.
	time.Sleep(200 * time.Millisecond)
	list, err := e.c.Activations(ctx, 200, "open-echo")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, a := range list {
		if a.Trigger == "orders" {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d activations for one event id, want 1", n)
	}

	if _, err := e.c.PutTrigger(ctx, client.Trigger{Name: "manual"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.c.PutRule(ctx, client.Rule{Name: "off", Trigger: "manual", Function: "open-echo", Active: false}); err != nil {
		t.Fatal(err)
	}
	f, err := e.c.FireTrigger(ctx, "manual", []byte(`{"n":1}`))
	if err != nil || len(f.Activations) != 0 {
		t.Fatalf("disabled rule fired: %v %+v", err, f)
	}
	if _, err := e.c.PutRule(ctx, client.Rule{Name: "off", Trigger: "manual", Function: "open-echo", Active: true}); err != nil {
		t.Fatal(err)
	}
	f, err = e.c.FireTrigger(ctx, "manual", []byte(`{"n":2}`))
	if err != nil || len(f.Activations) != 1 {
		t.Fatalf("fire: %v %+v", err, f)
	}
	if res, err := wait(t, e.c, &client.Pending{ActivationID: f.Activations[0], Kind: "function", Namespace: "default", Name: "open-echo", Mode: wire.ModePlain,
		RequestHash: sha256Hex([]byte(`{"n":2}`))}); err != nil || string(res.Output) != `{"n":2}` {
		t.Fatalf("manual fire result: %v", err)
	}
}

// TestTriggerBadInput checks the stable codes of malformed triggers and rules.
func TestTriggerBadInput(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	e.deploy("echo", fixture(t, "echo.wasm"), nil)
	e.deploy("open-echo", fixture(t, "echo.wasm"), openToAll)
	var ce *client.Error
	for _, c := range []struct {
		name string
		tr   client.Trigger
		code apierr.Code
	}{
		{"cron with 4 fields", client.Trigger{Name: "t", Cron: "* * * *"}, apierr.InvalidTrigger},
		{"cron minute 61", client.Trigger{Name: "t", Cron: "61 * * * *"}, apierr.InvalidTrigger},
		{"cron bad step", client.Trigger{Name: "t", Cron: "*/0 * * * *"}, apierr.InvalidTrigger},
		{"every too short", client.Trigger{Name: "t", Cron: "@every 10ms"}, apierr.InvalidTrigger},
		{"unknown macro", client.Trigger{Name: "t", Cron: "@sometimes"}, apierr.InvalidTrigger},
		{"cron and subject", client.Trigger{Name: "t", Cron: "@hourly", Subject: "a.b"}, apierr.InvalidTrigger},
		{"reserved subject", client.Trigger{Name: "t", Subject: "cloister.invoke"}, apierr.InvalidTrigger},
		{"leading wildcard", client.Trigger{Name: "t", Subject: "*.invoke.w.*"}, apierr.InvalidTrigger},
		{"everything", client.Trigger{Name: "t", Subject: ">"}, apierr.InvalidTrigger},
		{"KV subjects", client.Trigger{Name: "t", Subject: "$KV.cloister_activations.>"}, apierr.InvalidTrigger},
		{"another namespace", client.Trigger{Name: "t", Subject: "events.team-b.>"}, apierr.InvalidTrigger},
		{"bad wildcard", client.Trigger{Name: "t", Subject: "a.>.b"}, apierr.InvalidTrigger},
		{"empty token", client.Trigger{Name: "t", Subject: "a..b"}, apierr.InvalidTrigger},
		{"bad name", client.Trigger{Name: "Bad", Cron: "@hourly"}, apierr.InvalidTrigger},
	} {
		if _, err := e.c.PutTrigger(ctx, c.tr); !errors.As(err, &ce) || ce.Code != string(c.code) {
			t.Errorf("%s: got %v, want %s", c.name, err, c.code)
		}
	}
	if _, err := e.c.PutTrigger(ctx, client.Trigger{Name: "ok", Cron: "@daily"}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		r    client.Rule
		code apierr.Code
	}{
		{"confidential function", client.Rule{Name: "r", Trigger: "ok", Function: "echo"}, apierr.ConfidentialRequired},
		{"unknown function", client.Rule{Name: "r", Trigger: "ok", Function: "nope"}, apierr.NotFound},
		{"unknown trigger", client.Rule{Name: "r", Trigger: "nope", Function: "open-echo"}, apierr.NotFound},
		{"bad function name", client.Rule{Name: "r", Trigger: "ok", Function: "A"}, apierr.InvalidTrigger},
	} {
		if _, err := e.c.PutRule(ctx, c.r); !errors.As(err, &ce) || ce.Code != string(c.code) {
			t.Errorf("%s: got %v, want %s", c.name, err, c.code)
		}
	}
	if _, err := e.c.GetTrigger(ctx, "missing"); !errors.As(err, &ce) || ce.Code != string(apierr.NotFound) {
		t.Errorf("unknown trigger: %v", err)
	}
	if _, err := e.c.FireTrigger(ctx, "missing", nil); !errors.As(err, &ce) || ce.Code != string(apierr.NotFound) {
		t.Errorf("firing an unknown trigger: %v", err)
	}
	if err := e.c.DeleteRule(ctx, "missing"); !errors.As(err, &ce) || ce.Code != string(apierr.NotFound) {
		t.Errorf("deleting an unknown rule: %v", err)
	}
	req, _ := http.NewRequest(http.MethodPut, e.n.URL+"/v1/triggers/raw", strings.NewReader("not json"))
	req.Header.Set("Authorization", "Bearer "+e.n.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Errorf("trigger body not JSON: HTTP %d", resp.StatusCode)
	}
	st, eb := e.post("/v1/triggers/ok/fire", "application/json", e.n.Token, make([]byte, 2<<20))
	if st != 413 || eb.Code != apierr.PayloadTooLarge {
		t.Errorf("oversized event: %d %s", st, eb.Code)
	}
}

func sha256Hex(b []byte) string { return seal.SHA256Hex(b) }

// TestTriggerCannotTapTheBus drives the bus tap as a hostile tenant would:
// the default namespace tries to subscribe its function to the internal
// bus and to team-b's events, and plants a record from before subjects
// were confined. team-b's requests, results and events never become its
// input; its own trigger cannot fire itself; team-b is still served.
func TestTriggerCannotTapTheBus(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	eb := e.tenant("team-b")
	b := eb.c
	open := openToAll
	e.deploy("tap", fixture(t, "echo.wasm"), open)
	eb.deploy("open-echo", fixture(t, "echo.wasm"), open)

	var ce *client.Error
	for _, s := range []string{">", "*.>", "*.invoke.w.*", "*.invoke", "cloister.invoke.w.*", "$KV.cloister_activations.>",
		"$KV.cloister_openwhisk.>", "$JS.API.>", "_INBOX.>", "events.team-b.>", "events.*.>", "events.>"} {
		if _, err := e.c.PutTrigger(ctx, client.Trigger{Name: "tap", Subject: s}); !errors.As(err, &ce) || ce.Code != string(apierr.InvalidTrigger) {
			t.Errorf("trigger on %q: got %v, want invalid_trigger", s, err)
		}
	}

	// A record written before subjects were confined (or by anyone with
	// access to the bucket) is disabled, not subscribed.
	admin, err := e.n.Bus().Connect("admin")
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	js, err := jetstream.New(admin)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, bus.BucketTriggers)
	if err != nil {
		t.Fatal(err)
	}
	legacy := wire.Trigger{Namespace: "default", Name: "legacy", Subject: ">", Created: time.Now()}
	if _, err := kv.Put(ctx, "t.default.legacy", mustJSON(legacy)); err != nil {
		t.Fatal(err)
	}
	if _, err := e.c.PutRule(ctx, client.Rule{Name: "on-legacy", Trigger: "legacy", Function: "tap", Active: true}); err != nil {
		t.Fatal(err)
	}
	if got, err := e.c.GetTrigger(ctx, "legacy"); err != nil || got.Disabled == "" {
		t.Errorf("legacy trigger: %+v, %v; want it shown as disabled", got, err)
	}
	if _, err := e.c.FireTrigger(ctx, "legacy", nil); !errors.As(err, &ce) || ce.Code != string(apierr.InvalidTrigger) {
		t.Errorf("firing a disabled trigger: got %v, want invalid_trigger", err)
	}

	// The widest trigger the default namespace may have: all of its events.
	all, err := e.c.PutTrigger(ctx, client.Trigger{Name: "all", Subject: "events.default.>"})
	if err != nil || all.Subject != "events.default.>" {
		t.Fatalf("trigger on the namespace's events: %+v, %v", all, err)
	}
	if _, err := e.c.PutRule(ctx, client.Rule{Name: "on-all", Trigger: "all", Function: "tap", Active: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.PutTrigger(ctx, client.Trigger{Name: "orders", Subject: "orders"}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.PutRule(ctx, client.Rule{Name: "on-order", Trigger: "orders", Function: "open-echo", Active: true}); err != nil {
		t.Fatal(err)
	}

	nc, err := e.n.Bus().Connect("publisher")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	// The runner applies trigger records in order: once "all" fires, the
	// legacy record before it has been seen too.
	publishUntilFired := func(c *client.Client, subject, id, fn, trigger string, data []byte) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			m := nats.NewMsg(subject)
			m.Data = data
			m.Header.Set(nats.MsgIdHdr, id)
			if err := nc.PublishMsg(m); err != nil {
				t.Fatal(err)
			}
			list, _ := c.Activations(ctx, 50, fn)
			for _, a := range list {
				if a.Trigger == trigger {
					return
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("no activation of %s from %s", fn, trigger)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	publishUntilFired(e.c, "events.default.ping", "ping-1", "tap", "all", []byte(`{"ping":1}`))

	// team-b works: a plaintext call, an async call and an event.
	marker := randomMarker()
	secret := []byte(`{"secret":"` + string(marker) + `"}`)
	if res, err := b.Invoke(ctx, "open-echo", secret, client.InvokeOptions{Plaintext: true}); err != nil || !bytes.Equal(res.Output, secret) {
		t.Fatalf("team-b plaintext call: %v", err)
	}
	p, err := b.InvokeAsync(ctx, "open-echo", secret, client.AsyncOptions{Plaintext: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := wait(t, b, p); err != nil {
		t.Fatalf("team-b async call: %v", err)
	}
	publishUntilFired(b, "events.team-b.orders", "order-1", "open-echo", "orders", secret)

	// Nothing of team-b reached the default namespace's function, and its
	// own activation fired nothing more: one event, one activation.
	time.Sleep(time.Second)
	list, err := e.c.Activations(ctx, 200, "tap")
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range list {
		if leaks(a.Response.Result, marker) || leaks(mustJSON(a), marker) {
			t.Errorf("team-b's data reached the default namespace: activation %s from trigger %q", a.ActivationID, a.Trigger)
		}
		if a.Trigger != "all" {
			t.Errorf("activation %s from trigger %q, want only \"all\"", a.ActivationID, a.Trigger)
		}
	}
	if len(list) != 1 {
		t.Errorf("%d activations of tap, want 1 (a trigger firing itself?)", len(list))
	}
	if code, _ := e.send(http.MethodGet, "/readyz", "", "", nil); code != http.StatusOK {
		t.Errorf("/readyz: %d", code)
	}
}
