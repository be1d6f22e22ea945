package client

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"time"
)

// Trigger fires rules on a cron schedule, on every message of a NATS
// subject, or on demand (FireTrigger).
type Trigger struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Cron      string `json:"cron,omitempty"`
	Subject   string `json:"subject,omitempty"`
	// Payload is the input of cron fires (default: {"trigger","time"}).
	Payload json.RawMessage `json:"payload,omitempty"`
	Created time.Time       `json:"created"`
	// Disabled, when set, says why a stored trigger no longer fires (a
	// record from before a stricter rule); re-creating the trigger clears
	// it. It is ignored when a trigger is written.
	Disabled string `json:"disabled,omitempty"`
}

// Rule invokes a function asynchronously each time its trigger fires,
// with the fire's payload, while Active.
type Rule struct {
	Namespace string    `json:"namespace"`
	Name      string    `json:"name"`
	Trigger   string    `json:"trigger"`
	Function  string    `json:"function"`
	Version   int       `json:"version,omitempty"`
	Active    bool      `json:"active"`
	Created   time.Time `json:"created"`
}

// Fired lists the activations one fire created: one per active rule.
type Fired struct {
	Trigger     string   `json:"trigger"`
	Activations []string `json:"activationIds"`
}

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
