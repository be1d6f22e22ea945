package main

import (
	"context"
	"encoding/hex"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/cloister-faas/cloister/client"
	"github.com/cloister-faas/cloister/internal/wire"
)

const apiKeysUsage = "usage: cloister keys api create --scope invoke|deploy|admin [--expires DURATION] [--name N] [--namespace NS] [--platform] [--json]" +
	" | keys api list [--namespace NS] [--json] | keys api revoke KEY-OR-ID"

// parseLifetime reads a Go duration ("720h", "90m") or a number of days ("30d").
func parseLifetime(s string) (time.Duration, error) {
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.ParseUint(days, 10, 16)
		if err != nil || n == 0 {
			return 0, fmt.Errorf("%q is not a positive number of days", s)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%q is not a positive duration such as 720h, 90m or 30d", s)
	}
	return d, nil
}

func apiKeyCreate(fs *pflag.FlagSet) runFunc {
	scope := fs.String("scope", "", "invoke, deploy or admin (each includes the ones before)")
	expires := fs.String("expires", "", "lifetime of the key, such as 720h or 30d (default: it does not expire)")
	name := fs.String("name", "", "a label shown by 'keys api list'")
	ns := fs.String("namespace", "", "the key's namespace (default: your key's; another needs a platform admin key)")
	platform := fs.Bool("platform", false, "a platform key, which reaches past its namespace (needs a platform admin key)")
	asJSON := fs.Bool("json", false, "print the key and its record as JSON")
	return func(ctx context.Context, pos []string) error {
		if len(pos) != 0 || *scope == "" {
			return usageErr(apiKeysUsage)
		}
		o := client.APIKeyOptions{Scope: *scope, Namespace: *ns, Name: *name, Platform: *platform}
		if *expires != "" {
			var err error
			if o.Expires, err = parseLifetime(*expires); err != nil {
				return usageErr("--expires: %v", err)
			}
		}
		c, err := newClient()
		if err != nil {
			return err
		}
		k, err := c.CreateAPIKey(ctx, o)
		if err != nil {
			return err
		}
		if *asJSON {
			return printJSON(k)
		}
		// stdout carries the key and nothing else, for scripts.
		fmt.Println(k.Key)
		fmt.Fprintf(os.Stderr, "created API key %s: namespace %s, scope %s%s, %s; it is shown only this once\n",
			k.ID, k.Namespace, k.Scope, map[bool]string{true: " (platform)"}[k.Platform], expiry(k.APIKey))
		return nil
	}
}

func expiry(k client.APIKey) string {
	if k.Expires.IsZero() {
		return "no expiry"
	}
	return "expires " + k.Expires.UTC().Format(time.RFC3339)
}

func apiKeyList(fs *pflag.FlagSet) runFunc {
	ns := fs.String("namespace", "", "only this namespace's keys")
	asJSON := fs.Bool("json", false, "print JSON")
	return func(ctx context.Context, pos []string) error {
		if len(pos) != 0 {
			return usageErr(apiKeysUsage)
		}
		c, err := newClient()
		if err != nil {
			return err
		}
		keys, err := c.APIKeys(ctx, *ns)
		if err != nil {
			return err
		}
		return printList(keys, *asJSON, "ID\tNAMESPACE\tSCOPE\tNAME\tCREATED\tEXPIRES\tSTATUS", func(k client.APIKey) string {
			scope, exp := k.Scope, "-"
			if k.Platform {
				scope += " (platform)"
			}
			if !k.Expires.IsZero() {
				exp = k.Expires.UTC().Format(time.RFC3339)
			}
			return fmt.Sprintf("%s\t%s\t%s\t%s\t%s\t%s\t%s", k.ID, k.Namespace, scope, k.Name, k.Created.UTC().Format(time.RFC3339), exp, k.Status)
		})
	}
}

func apiKeyRevoke(fs *pflag.FlagSet) runFunc {
	return func(ctx context.Context, pos []string) error {
		if len(pos) != 1 {
			return usageErr(apiKeysUsage)
		}
		arg := pos[0]
		if !strings.HasPrefix(arg, wire.APIKeyPrefix) {
			arg = strings.ToLower(arg)
		}
		if _, err := hex.DecodeString(arg); !strings.HasPrefix(arg, wire.APIKeyPrefix) && (err != nil || len(arg) != wire.APIKeyIDLen) {
			return usageErr("keys api revoke: %q is neither a key (%s...) nor a key id (%d hex digits, from `keys api list`)", short(arg), wire.APIKeyPrefix, wire.APIKeyIDLen)
		}
		c, err := newClient()
		if err != nil {
			return err
		}
		k, err := c.RevokeAPIKey(ctx, arg)
		if err != nil {
			return err
		}
		fmt.Printf("revoked API key %s (namespace %s, scope %s) at %s; every gateway refuses it within seconds\n",
			k.ID, k.Namespace, k.Scope, k.Revoked.UTC().Format(time.RFC3339))
		return nil
	}
}
