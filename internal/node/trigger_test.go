package node_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/cloister-faas/cloister/client"
	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/bundle"
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
	e.deploy("open-echo", fixture(t, "echo.wasm"), func(m *bundle.Manifest) { m.Confidential = bundle.ConfidentialOptional })

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

	if _, err := e.c.PutTrigger(ctx, client.Trigger{Name: "orders", Subject: "shop.orders.*"}); err != nil {
		t.Fatal(err)
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
		m := nats.NewMsg("shop.orders.eu")
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
	e.deploy("open-echo", fixture(t, "echo.wasm"), func(m *bundle.Manifest) { m.Confidential = bundle.ConfidentialOptional })
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
