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
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/async"
	"github.com/cloister-faas/cloister/internal/bundle"
	"github.com/cloister-faas/cloister/internal/bus"
	"github.com/cloister-faas/cloister/internal/wire"
)

// Limits.
const (
	// MaxPayload bounds a trigger's stored payload and a fired event.
	MaxPayload = 1 << 20
	// MaxRulesPerTrigger bounds the activations one fire creates.
	MaxRulesPerTrigger = 64
)

// Quotas bound what one namespace may keep in the store. Zero fields take
// the defaults below.
type Quotas struct {
	// Triggers per namespace (default DefaultMaxTriggers).
	Triggers int
	// Rules per namespace (default DefaultMaxRules).
	Rules int
}

// Default quotas.
const (
	DefaultMaxTriggers = 100
	DefaultMaxRules    = 200
)

// Store keeps triggers ("t.<ns>.<name>") and rules ("r.<ns>.<name>").
type Store struct {
	js jetstream.JetStream // kv's, for listings (bus.Keys)
	kv jetstream.KeyValue
	q  Quotas
}

// NewStore returns a Store over the triggers bucket kv of js with the
// default quotas.
func NewStore(js jetstream.JetStream, kv jetstream.KeyValue) *Store {
	return NewStoreWithQuotas(js, kv, Quotas{})
}

// NewStoreWithQuotas returns a Store that refuses a namespace's new trigger
// or rule past q with apierr.QuotaExceeded. Replacing an existing one is
// always allowed. Concurrent creations may pass the count together, so a
// namespace can exceed a quota by the number of its racing requests.
func NewStoreWithQuotas(js jetstream.JetStream, kv jetstream.KeyValue, q Quotas) *Store {
	if q.Triggers <= 0 {
		q.Triggers = DefaultMaxTriggers
	}
	if q.Rules <= 0 {
		q.Rules = DefaultMaxRules
	}
	return &Store{js: js, kv: kv, q: q}
}

// keys lists the keys under prefix from the bucket's stream (bus.Keys), a
// listing that no concurrent change makes miss a key. Deleted keys may be
// listed: reading one finds nothing.
func (s *Store) keys(ctx context.Context, prefix string) ([]string, error) {
	keys, err := bus.Keys(ctx, s.js, s.kv, prefix+"*")
	if err != nil {
		return nil, apierr.New(apierr.Unavailable, "trigger store unavailable")
	}
	return keys, nil
}

// checkQuota refuses a new key under prefix once the namespace has limit.
func (s *Store) checkQuota(ctx context.Context, key, prefix, what string, limit int) error {
	if _, err := s.kv.Get(ctx, key); err == nil {
		return nil // a replacement
	} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
		return apierr.New(apierr.Unavailable, "trigger store unavailable")
	}
	keys, err := s.keys(ctx, prefix)
	if err != nil {
		return err
	}
	n := len(keys)
	if n >= limit {
		// The listing counts deleted keys too: at the limit, count the
		// ones that are there.
		n = 0
		for _, k := range keys {
			if _, err := s.kv.Get(ctx, k); err == nil {
				n++
			} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
				return apierr.New(apierr.Unavailable, "trigger store unavailable")
			}
		}
	}
	if n >= limit {
		return apierr.New(apierr.QuotaExceeded, "the namespace already has %d %s, its quota; delete one first", n, what)
	}
	return nil
}

// TriggerKey is the bucket key of a trigger.
func TriggerKey(ns, name string) string { return "t." + ns + "." + name }

func ruleKey(ns, name string) string { return "r." + ns + "." + name }

// EventsRoot is the first token of every subject a trigger may listen on.
// Each namespace owns the space "events.<namespace>.>" and nothing else:
// the internal subjects ("cloister.…"), the JetStream and KV API ("$JS.…",
// "$KV.…"), reply inboxes ("_INBOX.…") and other namespaces' events are out
// of a trigger's reach. Nothing in Cloister publishes under EventsRoot, so a
// trigger's own activations can never fire it again.
const EventsRoot = "events"

// EventSpace is the subject prefix of namespace ns's events ("events.<ns>.").
func EventSpace(ns string) string { return EventsRoot + "." + ns + "." }

// MaxSubject bounds a trigger subject, with its event-space prefix.
const MaxSubject = 256

// BusSubject returns the subject a trigger of namespace ns subscribes to,
// for the subject its owner gave: either the full subject, already under
// EventSpace(ns), or one relative to it ("orders.*" in namespace "shop"
// becomes "events.shop.orders.*"). Its first token must be literal: a
// leading wildcard, ">", a system prefix ("cloister", "$…", "_…") or another
// namespace's event space is refused, whatever the namespace prefix would
// make of it, so that a subject never means something other than it reads.
func BusSubject(ns, subj string) (string, error) {
	if subj == "" {
		return "", errors.New("subject must not be empty")
	}
	first, _, _ := strings.Cut(subj, ".")
	switch {
	case first == "*" || first == ">":
		return "", fmt.Errorf("a subject may not start with a wildcard; it would match subjects outside the namespace (use %q for all of the namespace's events)", EventSpace(ns)+">")
	case first == "cloister" || strings.HasPrefix(first, "$") || strings.HasPrefix(first, "_"):
		return "", fmt.Errorf("subjects under %q are reserved for the platform", first)
	case first == EventsRoot:
		if !strings.HasPrefix(subj, EventSpace(ns)) {
			return "", fmt.Errorf("subjects under %q belong to other namespaces; this namespace's events are under %q", EventsRoot+".", EventSpace(ns))
		}
	default:
		subj = EventSpace(ns) + subj
	}
	return subj, ValidSubject(ns, subj)
}

// ValidSubject reports why subj cannot be the bus subject of a trigger of
// namespace ns, or nil. A valid subject is under EventSpace(ns), with at
// least one token after it; its tokens are made of ASCII letters, digits,
// '-' and '_', or are whole wildcards ("*", and ">" last).
func ValidSubject(ns, subj string) error {
	if len(subj) > MaxSubject {
		return fmt.Errorf("subject over %d characters (with its prefix %q)", MaxSubject, EventSpace(ns))
	}
	if !bundle.ValidName(ns) {
		return fmt.Errorf("invalid namespace %q", ns)
	}
	rest, ok := strings.CutPrefix(subj, EventSpace(ns))
	if !ok || rest == "" {
		return fmt.Errorf("subject must be under %q", EventSpace(ns))
	}
	toks := strings.Split(rest, ".")
	for i, t := range toks {
		switch {
		case t == "":
			return errors.New("subject has an empty token")
		case t == ">" && i != len(toks)-1:
			return errors.New("'>' may only be the last token")
		case t == "*" || t == ">":
		case strings.ContainsAny(t, "*>"):
			return errors.New("wildcards must be whole tokens")
		case !validToken(t):
			return fmt.Errorf("token %q: use ASCII letters, digits, '-' and '_'", t)
		}
	}
	return nil
}

func validToken(t string) bool {
	for _, c := range []byte(t) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
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
		if err := ValidSubject(t.Namespace, t.Subject); err != nil {
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
	keys, err := s.keys(ctx, prefix)
	if err != nil {
		return nil, err
	}
	slices.Sort(keys) // in name order
	out := []*T{}
	for _, k := range keys {
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

// PutTrigger validates and stores a trigger (creating or replacing it). A
// subject relative to the namespace's event space is made absolute first
// (see BusSubject), so t.Subject is where publishers send events.
func (s *Store) PutTrigger(ctx context.Context, t *wire.Trigger) error {
	if t.Subject != "" {
		subj, err := BusSubject(t.Namespace, t.Subject)
		if err != nil {
			return apierr.New(apierr.InvalidTrigger, "subject %q: %v", t.Subject, err)
		}
		t.Subject = subj
	}
	t.Disabled = ""
	if err := Validate(t); err != nil {
		return err
	}
	if err := s.checkQuota(ctx, TriggerKey(t.Namespace, t.Name), "t."+t.Namespace+".", "triggers", s.q.Triggers); err != nil {
		return err
	}
	return s.put(ctx, TriggerKey(t.Namespace, t.Name), t)
}

// GetTrigger returns a trigger. A stored trigger that breaks today's rules
// is returned with Disabled set to the reason.
func (s *Store) GetTrigger(ctx context.Context, ns, name string) (*wire.Trigger, error) {
	var t wire.Trigger
	if err := s.get(ctx, TriggerKey(ns, name), fmt.Sprintf("trigger %q", name), &t); err != nil {
		return &t, err
	}
	markDisabled(&t)
	return &t, nil
}

// markDisabled sets t.Disabled when t may not fire.
func markDisabled(t *wire.Trigger) {
	t.Disabled = ""
	if err := Validate(t); err != nil {
		t.Disabled = err.Error()
	}
}

// DeleteTrigger removes a trigger (its rules stay, and fire nothing).
func (s *Store) DeleteTrigger(ctx context.Context, ns, name string) error {
	return s.delete(ctx, TriggerKey(ns, name), fmt.Sprintf("trigger %q", name))
}

// Triggers lists a namespace's triggers, with Disabled set as GetTrigger does.
func (s *Store) Triggers(ctx context.Context, ns string) ([]*wire.Trigger, error) {
	l, err := list[wire.Trigger](ctx, s, "t."+ns+".")
	for _, t := range l {
		markDisabled(t)
	}
	return l, err
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
	if err := s.checkQuota(ctx, ruleKey(r.Namespace, r.Name), "r."+r.Namespace+".", "rules", s.q.Rules); err != nil {
		return err
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

// Submitter queues invocations: *async.Store.
type Submitter interface {
	Submit(ctx context.Context, sub async.Submission) (wire.Accepted, error)
}

// Fire invokes every active rule of t asynchronously with payload. key, if
// set, makes the fire idempotent: firing again with the same key (another
// trigger runner, a redelivered event) creates no new activations.
func Fire(ctx context.Context, s *Store, q Submitter, t *wire.Trigger, payload []byte, key string) (wire.Fired, error) {
	out := wire.Fired{Trigger: t.Name, Activations: []string{}}
	if err := Validate(t); err != nil {
		return out, apierr.New(apierr.InvalidTrigger, "trigger %q is disabled (%v); create it again to enable it", t.Name, err)
	}
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
	b, _ := json.Marshal(map[string]string{"trigger": t.Name, "scheduled": at.UTC().Format(time.RFC3339)}) // strings always encode
	return b
}
