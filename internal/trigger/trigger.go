// Package trigger fires functions from events: cron schedules, messages on
// NATS subjects, and explicit fires over the API. A trigger fires its
// rules; each active rule invokes its function asynchronously (an
// activation in the work queue) with the event as plaintext input.
//
// Event payloads are not client secrets: they come from the bus or the
// schedule. Rules may therefore only name functions whose manifest allows
// plaintext requests (confidential: optional); the worker enforces the
// same. This package never handles a sealed payload.
package trigger

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/async"
	"github.com/cloister-faas/cloister/internal/bundle"
	"github.com/cloister-faas/cloister/internal/wire"
)

// Limits.
const (
	// MaxPayload bounds a trigger's stored payload and a fired event.
	MaxPayload = 1 << 20
	// MaxRulesPerTrigger bounds the activations one fire creates.
	MaxRulesPerTrigger = 64
)

// Store keeps triggers ("t.<ns>.<name>") and rules ("r.<ns>.<name>").
type Store struct {
	kv jetstream.KeyValue
}

// NewStore returns a Store over the triggers bucket.
func NewStore(kv jetstream.KeyValue) *Store { return &Store{kv: kv} }

// TriggerKey is the bucket key of a trigger.
func TriggerKey(ns, name string) string { return "t." + ns + "." + name }

func ruleKey(ns, name string) string { return "r." + ns + "." + name }

// ValidSubject reports why subj cannot be a trigger subject, or nil.
func ValidSubject(subj string) error {
	if subj == "" || len(subj) > 256 {
		return errors.New("subject must have 1 to 256 characters")
	}
	for _, p := range []string{"cloister.", "$", "_INBOX."} {
		if strings.HasPrefix(subj, p) {
			return fmt.Errorf("subjects under %q are reserved", p)
		}
	}
	toks := strings.Split(subj, ".")
	for i, t := range toks {
		switch {
		case t == "":
			return errors.New("subject has an empty token")
		case strings.ContainsAny(t, " \t\r\n"):
			return errors.New("subject contains white space")
		case t == ">" && i != len(toks)-1:
			return errors.New("'>' may only be the last token")
		case t != "*" && t != ">" && strings.ContainsAny(t, "*>"):
			return errors.New("wildcards must be whole tokens")
		}
	}
	return nil
}

// Validate checks a trigger's fields; errors are apierr InvalidTrigger.
func Validate(t *wire.Trigger) error {
	if !bundle.ValidName(t.Name) {
		return apierr.New(apierr.InvalidTrigger, "invalid trigger name %q: use lower-case letters, digits, '-' and '_'", t.Name)
	}
	if t.Cron != "" && t.Subject != "" {
		return apierr.New(apierr.InvalidTrigger, "a trigger has a cron schedule or a subject, not both")
	}
	if t.Cron != "" {
		if _, err := ParseCron(t.Cron); err != nil {
			return apierr.New(apierr.InvalidTrigger, "cron: %v", err)
		}
	}
	if t.Subject != "" {
		if err := ValidSubject(t.Subject); err != nil {
			return apierr.New(apierr.InvalidTrigger, "subject %q: %v", t.Subject, err)
		}
	}
	if len(t.Payload) > MaxPayload {
		return apierr.New(apierr.PayloadTooLarge, "trigger payload over %d bytes", MaxPayload)
	}
	if len(t.Payload) > 0 && !json.Valid(t.Payload) {
		return apierr.New(apierr.InvalidTrigger, "payload must be JSON")
	}
	return nil
}

func (s *Store) put(ctx context.Context, key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if _, err := s.kv.Put(ctx, key, b); err != nil {
		return apierr.New(apierr.Unavailable, "trigger store unavailable")
	}
	return nil
}

func (s *Store) get(ctx context.Context, key, what string, v any) error {
	e, err := s.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return apierr.New(apierr.NotFound, "%s not found", what)
	}
	if err != nil {
		return apierr.New(apierr.Unavailable, "trigger store unavailable")
	}
	if err := json.Unmarshal(e.Value(), v); err != nil {
		return apierr.New(apierr.Internal, "corrupt %s record", what)
	}
	return nil
}

func (s *Store) delete(ctx context.Context, key, what string) error {
	if _, err := s.kv.Get(ctx, key); errors.Is(err, jetstream.ErrKeyNotFound) {
		return apierr.New(apierr.NotFound, "%s not found", what)
	}
	if err := s.kv.Delete(ctx, key); err != nil {
		return apierr.New(apierr.Unavailable, "trigger store unavailable")
	}
	return nil
}

func list[T any](ctx context.Context, s *Store, prefix string) ([]*T, error) {
	l, err := s.kv.ListKeysFiltered(ctx, prefix+"*")
	if err != nil {
		return nil, apierr.New(apierr.Unavailable, "trigger store unavailable")
	}
	out := []*T{}
	for k := range l.Keys() {
		var v T
		if err := s.get(ctx, k, "entry", &v); err != nil {
			if apierr.CodeOf(err) == apierr.NotFound {
				continue
			}
			return nil, err
		}
		out = append(out, &v)
	}
	return out, nil
}

// PutTrigger validates and stores a trigger (creating or replacing it).
func (s *Store) PutTrigger(ctx context.Context, t *wire.Trigger) error {
	if err := Validate(t); err != nil {
		return err
	}
	return s.put(ctx, TriggerKey(t.Namespace, t.Name), t)
}

// GetTrigger returns a trigger.
func (s *Store) GetTrigger(ctx context.Context, ns, name string) (*wire.Trigger, error) {
	var t wire.Trigger
	return &t, s.get(ctx, TriggerKey(ns, name), fmt.Sprintf("trigger %q", name), &t)
}

// DeleteTrigger removes a trigger (its rules stay, and fire nothing).
func (s *Store) DeleteTrigger(ctx context.Context, ns, name string) error {
	return s.delete(ctx, TriggerKey(ns, name), fmt.Sprintf("trigger %q", name))
}

// Triggers lists a namespace's triggers.
func (s *Store) Triggers(ctx context.Context, ns string) ([]*wire.Trigger, error) {
	return list[wire.Trigger](ctx, s, "t."+ns+".")
}

// PutRule stores a rule. The caller checks that its function exists and
// accepts plaintext input.
func (s *Store) PutRule(ctx context.Context, r *wire.Rule) error {
	if !bundle.ValidName(r.Name) || !bundle.ValidName(r.Trigger) || !bundle.ValidName(r.Function) || r.Version < 0 {
		return apierr.New(apierr.InvalidTrigger, "a rule needs valid names for itself, its trigger and its function, and a version ≥ 0")
	}
	if _, err := s.GetTrigger(ctx, r.Namespace, r.Trigger); err != nil {
		return err
	}
	rules, err := s.RulesFor(ctx, r.Namespace, r.Trigger, false)
	if err != nil {
		return err
	}
	if len(rules) >= MaxRulesPerTrigger {
		return apierr.New(apierr.InvalidTrigger, "trigger %q already has %d rules", r.Trigger, MaxRulesPerTrigger)
	}
	return s.put(ctx, ruleKey(r.Namespace, r.Name), r)
}

// GetRule returns a rule.
func (s *Store) GetRule(ctx context.Context, ns, name string) (*wire.Rule, error) {
	var r wire.Rule
	return &r, s.get(ctx, ruleKey(ns, name), fmt.Sprintf("rule %q", name), &r)
}

// DeleteRule removes a rule.
func (s *Store) DeleteRule(ctx context.Context, ns, name string) error {
	return s.delete(ctx, ruleKey(ns, name), fmt.Sprintf("rule %q", name))
}

// Rules lists a namespace's rules.
func (s *Store) Rules(ctx context.Context, ns string) ([]*wire.Rule, error) {
	return list[wire.Rule](ctx, s, "r."+ns+".")
}

// RulesFor lists the rules of one trigger (only the active ones if active).
func (s *Store) RulesFor(ctx context.Context, ns, trigger string, active bool) ([]*wire.Rule, error) {
	all, err := s.Rules(ctx, ns)
	if err != nil {
		return nil, err
	}
	var out []*wire.Rule
	for _, r := range all {
		if r.Trigger == trigger && (r.Active || !active) {
			out = append(out, r)
		}
	}
	return out, nil
}

// Fire invokes every active rule of t asynchronously with payload. key, if
// set, makes the fire idempotent: firing again with the same key (another
// trigger runner, a redelivered event) creates no new activations.
func Fire(ctx context.Context, s *Store, q *async.Store, t *wire.Trigger, payload []byte, key string) (wire.Fired, error) {
	out := wire.Fired{Trigger: t.Name, Activations: []string{}}
	if len(payload) > MaxPayload {
		return out, apierr.New(apierr.PayloadTooLarge, "event over %d bytes", MaxPayload)
	}
	rules, err := s.RulesFor(ctx, t.Namespace, t.Name, true)
	if err != nil {
		return out, err
	}
	var errs []error
	for _, r := range rules {
		sub := async.Submission{
			Request: wire.InvokeRequest{Namespace: t.Namespace, Name: r.Function, Version: r.Version, Mode: wire.ModePlain, Plain: payload},
			Kind:    "function", Trigger: t.Name, Rule: r.Name,
		}
		if key != "" {
			sub.IdempotencyKey = "trigger/" + t.Name + "/" + r.Name + "/" + key
		}
		acc, err := q.Submit(ctx, sub)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out.Activations = append(out.Activations, acc.ActivationID)
	}
	if len(errs) > 0 {
		return out, errs[0]
	}
	return out, nil
}

// CronPayload is the default input of a cron fire.
func CronPayload(t *wire.Trigger, at time.Time) []byte {
	if len(t.Payload) > 0 {
		return t.Payload
	}
	b, _ := json.Marshal(map[string]string{"trigger": t.Name, "scheduled": at.UTC().Format(time.RFC3339)})
	return b
}
