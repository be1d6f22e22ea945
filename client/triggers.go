package client

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"

	"github.com/cloister-faas/cloister/internal/wire"
)

// Trigger fires rules on a cron schedule, a NATS subject, or on demand.
type Trigger = wire.Trigger

// Rule invokes a function asynchronously each time its trigger fires.
type Rule = wire.Rule

// Fired lists the activations one fire created.
type Fired = wire.Fired

// PutTrigger creates or replaces a trigger. Set at most one of Cron and
// Subject; Payload is the input of cron and empty fires.
func (c *Client) PutTrigger(ctx context.Context, t Trigger) (*Trigger, error) {
	b, err := json.Marshal(t) // fails on a Payload that is not JSON
	if err != nil {
		return nil, fmt.Errorf("encoding trigger %q: %w", t.Name, err)
	}
	var out Trigger
	return &out, c.do(ctx, http.MethodPut, "/v1/triggers/"+url.PathEscape(t.Name), b, "application/json", &out)
}

// GetTrigger returns a trigger.
func (c *Client) GetTrigger(ctx context.Context, name string) (*Trigger, error) {
	var out Trigger
	return &out, c.do(ctx, http.MethodGet, "/v1/triggers/"+url.PathEscape(name), nil, "", &out)
}

// Triggers lists the namespace's triggers.
func (c *Client) Triggers(ctx context.Context) ([]*Trigger, error) {
	var out struct {
		Triggers []*Trigger `json:"triggers"`
	}
	return out.Triggers, c.do(ctx, http.MethodGet, "/v1/triggers", nil, "", &out)
}

// DeleteTrigger removes a trigger.
func (c *Client) DeleteTrigger(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, "/v1/triggers/"+url.PathEscape(name), nil, "", nil)
}

// FireTrigger fires a trigger with payload as the event (nil: the
// trigger's own payload).
func (c *Client) FireTrigger(ctx context.Context, name string, payload []byte) (*Fired, error) {
	var out Fired
	return &out, c.do(ctx, http.MethodPost, "/v1/triggers/"+url.PathEscape(name)+"/fire", payload, "application/json", &out)
}

// PutRule creates or replaces a rule.
func (c *Client) PutRule(ctx context.Context, r Rule) (*Rule, error) {
	b, err := json.Marshal(r) // fails only on a Created outside the years 0 to 9999
	if err != nil {
		return nil, fmt.Errorf("encoding rule %q: %w", r.Name, err)
	}
	var out Rule
	return &out, c.do(ctx, http.MethodPut, "/v1/rules/"+url.PathEscape(r.Name), b, "application/json", &out)
}

// GetRule returns a rule.
func (c *Client) GetRule(ctx context.Context, name string) (*Rule, error) {
	var out Rule
	return &out, c.do(ctx, http.MethodGet, "/v1/rules/"+url.PathEscape(name), nil, "", &out)
}

// Rules lists the namespace's rules.
func (c *Client) Rules(ctx context.Context) ([]*Rule, error) {
	var out struct {
		Rules []*Rule `json:"rules"`
	}
	return out.Rules, c.do(ctx, http.MethodGet, "/v1/rules", nil, "", &out)
}

// DeleteRule removes a rule.
func (c *Client) DeleteRule(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, "/v1/rules/"+url.PathEscape(name), nil, "", nil)
}
