package main

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/pflag"

	"github.com/cloister-faas/cloister/client"
)

func cmdTrigger(sub string, fs *pflag.FlagSet) runFunc {
	const use = "usage: cloister trigger create NAME [--cron EXPR | --subject SUBJECT] [--payload JSON] | list | get NAME | delete NAME | fire NAME [--data JSON|@file]"
	cron := fs.String("cron", "", "cron schedule: 5 fields, 6 with seconds first, @hourly…, or @every D")
	subject := fs.String("subject", "", "NATS subject whose messages fire the trigger, under the namespace's event space events.<namespace>. (a relative subject is put there)")
	payload := fs.String("payload", "", "JSON input of cron fires (default {\"trigger\",\"scheduled\"})")
	data := fs.String("data", "", "event for fire: a literal or @file")
	asJSON := fs.Bool("json", false, "print JSON")
	return func(ctx context.Context, pos []string) error {
		c, err := newClient()
		if err != nil {
			return err
		}
		if sub == "list" {
			l, err := c.Triggers(ctx)
			if err != nil {
				return err
			}
			return printList(l, *asJSON, "TRIGGER\tCRON\tSUBJECT\tSTATUS", func(t *client.Trigger) string {
				status := "enabled"
				if t.Disabled != "" {
					status = "disabled: " + t.Disabled
				}
				return fmt.Sprintf("%s\t%s\t%s\t%s", t.Name, t.Cron, t.Subject, status)
			})
		}
		if len(pos) != 1 {
			return usageErr(use)
		}
		name := pos[0]
		switch sub {
		case "create":
			t := client.Trigger{Name: name, Cron: *cron, Subject: *subject}
			if *payload != "" {
				if !json.Valid([]byte(*payload)) {
					return usageErr("--payload must be JSON")
				}
				t.Payload = json.RawMessage(*payload)
			}
			out, err := c.PutTrigger(ctx, t)
			if err != nil {
				return err
			}
			if *asJSON {
				return printJSON(out)
			}
			fmt.Printf("trigger %s saved\n", name)
			if out.Subject != "" {
				fmt.Printf("publish its events on %s\n", out.Subject)
			}
			return nil
		case "get":
			t, err := c.GetTrigger(ctx, name)
			if err != nil {
				return err
			}
			return printJSON(t)
		case "delete":
			if err := c.DeleteTrigger(ctx, name); err != nil {
				return err
			}
			fmt.Printf("trigger %s deleted\n", name)
			return nil
		case "fire":
			in, err := readData(*data)
			if err != nil {
				return err
			}
			f, err := c.FireTrigger(ctx, name, in)
			if err != nil {
				return err
			}
			if *asJSON {
				return printJSON(f)
			}
			for _, id := range f.Activations {
				fmt.Println(id)
			}
			fmt.Fprintf(os.Stderr, "trigger %s fired %d rule(s)\n", name, len(f.Activations))
			return nil
		}
		return usageErr(use)
	}
}

func cmdRule(sub string, fs *pflag.FlagSet) runFunc {
	const use = "usage: cloister rule create NAME --trigger T --function F [--version V] [--disabled] | list | get NAME | delete NAME | enable NAME | disable NAME"
	trig := fs.String("trigger", "", "the trigger that fires the rule")
	fn := fs.String("function", "", "the function it invokes (confidential: optional)")
	version := fs.Int("version", 0, "function version (default latest)")
	disabled := fs.Bool("disabled", false, "create the rule inactive")
	asJSON := fs.Bool("json", false, "print JSON")
	return func(ctx context.Context, pos []string) error {
		c, err := newClient()
		if err != nil {
			return err
		}
		if sub == "list" {
			l, err := c.Rules(ctx)
			if err != nil {
				return err
			}
			return printList(l, *asJSON, "RULE\tTRIGGER\tFUNCTION\tVERSION\tACTIVE", func(r *client.Rule) string {
				return fmt.Sprintf("%s\t%s\t%s\t%s\t%v", r.Name, r.Trigger, r.Function, versionLabel(r.Version), r.Active)
			})
		}
		if len(pos) != 1 {
			return usageErr(use)
		}
		name := pos[0]
		switch sub {
		case "create":
			if *trig == "" || *fn == "" {
				return usageErr(use)
			}
			r, err := c.PutRule(ctx, client.Rule{Name: name, Trigger: *trig, Function: *fn, Version: *version, Active: !*disabled})
			if err != nil {
				return err
			}
			if *asJSON {
				return printJSON(r)
			}
			fmt.Printf("rule %s: trigger %s → %s %s (active: %v)\n", name, r.Trigger, r.Function, versionLabel(r.Version), r.Active)
			return nil
		case "get":
			r, err := c.GetRule(ctx, name)
			if err != nil {
				return err
			}
			return printJSON(r)
		case "delete":
			if err := c.DeleteRule(ctx, name); err != nil {
				return err
			}
			fmt.Printf("rule %s deleted\n", name)
			return nil
		case "enable", "disable":
			r, err := c.GetRule(ctx, name)
			if err != nil {
				return err
			}
			r.Active = sub == "enable"
			if _, err := c.PutRule(ctx, *r); err != nil {
				return err
			}
			fmt.Printf("rule %s %sd\n", name, sub)
			return nil
		}
		return usageErr(use)
	}
}

func versionLabel(v int) string {
	if v == 0 {
		return "latest"
	}
	return "v" + strconv.Itoa(v)
}

func cmdSeq(sub string, fs *pflag.FlagSet) runFunc {
	const use = "usage: cloister seq create NAME STEP[@VERSION]... [--key F | --unsigned] | list | get NAME | delete NAME"
	asJSON := fs.Bool("json", false, "print JSON")
	keyPath := fs.String("key", defaultKeyPath(), "create: the owner key that signs the definition (the key that signed the steps)")
	unsigned := fs.Bool("unsigned", false, "create: store the definition unsigned (clients that pin owner keys will not run it)")
	return func(ctx context.Context, pos []string) error {
		c, err := newClient()
		if err != nil {
			return err
		}
		switch {
		case sub == "list":
			l, err := c.Sequences(ctx)
			if err != nil {
				return err
			}
			if *asJSON {
				return printJSON(l)
			}
			for _, s := range l {
				fmt.Printf("%s: %s  (%s)\n", s.Name, stepsString(s.Steps), signedBy(s))
			}
			return nil
		case sub == "create" && len(pos) >= 2:
			var steps []client.StepRef
			for _, p := range pos[1:] {
				n, v, hasV := strings.Cut(p, "@")
				s := client.StepRef{Name: n}
				if hasV {
					if s.Version, err = strconv.Atoi(v); err != nil || s.Version < 1 {
						return usageErr("step %q: the version after @ must be a positive integer", p)
					}
				}
				steps = append(steps, s)
			}
			var key ed25519.PrivateKey
			if !*unsigned {
				if key, err = loadKey(*keyPath); err != nil {
					return fmt.Errorf("%w (or create it with --unsigned)", err)
				}
			}
			s, err := c.PutSequence(ctx, pos[0], steps, key)
			if err != nil {
				return err
			}
			if *asJSON {
				return printJSON(s)
			}
			fmt.Printf("sequence %s: %s  (%s)\n", s.Name, stepsString(s.Steps), signedBy(s))
			return nil
		case sub == "get" && len(pos) == 1:
			s, err := c.GetSequence(ctx, pos[0])
			if err != nil {
				return err
			}
			return printJSON(s)
		case sub == "delete" && len(pos) == 1:
			if err := c.DeleteSequence(ctx, pos[0]); err != nil {
				return err
			}
			fmt.Printf("sequence %s deleted\n", pos[0])
			return nil
		}
		return usageErr(use)
	}
}

// signedBy says who signed a sequence definition, as stored (the client
// verifies it when it invokes the sequence).
func signedBy(s *client.Sequence) string {
	if s.Signer == nil {
		return "unsigned"
	}
	return "signed by owner " + short(hex.EncodeToString(s.Signer))
}

func stepsString(steps []client.StepRef) string {
	parts := make([]string, len(steps))
	for i, s := range steps {
		parts[i] = s.Name + "@" + versionLabel(s.Version)
	}
	return strings.Join(parts, " → ")
}
