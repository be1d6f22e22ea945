package main

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/spf13/pflag"

	"github.com/cloister-faas/cloister/client"
	"github.com/cloister-faas/cloister/internal/bundle"
)

func printJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// printList prints l as JSON, or as a table: header (tab-separated
// columns), then row(item) for each item.
func printList[T any](l []T, asJSON bool, header string, row func(T) string) error {
	if asJSON {
		return printJSON(l)
	}
	// The tabwriter buffers rows with cells: Flush is the write that can fail.
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, header) // buffered: see above
	for _, v := range l {
		fmt.Fprintln(tw, row(v)) // as for the header
	}
	return tw.Flush()
}

func fnDeploy(fs *pflag.FlagSet) runFunc {
	manifestPath := fs.String("manifest", "", "function manifest (JSON); defaults apply where absent")
	keyPath := fs.String("key", defaultKeyPath(), "owner signing key")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	return func(ctx context.Context, pos []string) error {
		if len(pos) != 2 {
			return usageErr("usage: cloister fn deploy NAME FILE.wasm|FILE.js|FILE.py|DIR [--manifest F] [--key F]")
		}
		name, file, manifest := pos[0], pos[1], *manifestPath
		if !bundle.ValidName(name) {
			return usageErr("invalid function name %q: use lower-case letters, digits, '-' and '_' (at most 63)", name)
		}
		progress := func(format string, a ...any) {
			if isTerminal(os.Stderr) && !*asJSON {
				fmt.Fprintf(os.Stderr, "  "+format+"\n", a...)
			}
		}
		if fi, err := os.Stat(file); err == nil && fi.IsDir() {
			src, mf, err := deployFolder(file)
			if err != nil {
				return err
			}
			file = src
			if manifest == "" && mf != "" {
				manifest = mf
				progress("deploying %s with %s", src, mf)
			} else {
				progress("deploying %s", src)
			}
		}
		module, err := os.ReadFile(file)
		if err != nil {
			return fmt.Errorf("reading module: %w", err)
		}
		var draft []byte
		if manifest != "" {
			if draft, err = os.ReadFile(manifest); err != nil {
				return fmt.Errorf("reading manifest: %w", err)
			}
		}
		m, err := bundle.ManifestFor(name, file, draft)
		if err != nil {
			return usageErr("%v", err)
		}
		kind := map[string]string{bundle.RuntimeJS: "JavaScript", bundle.RuntimePython: "Python"}[m.Runtime]
		if kind == "" {
			kind = "wasm"
		}
		key, err := loadKey(*keyPath)
		if err != nil {
			return err
		}
		c, err := newClient()
		if err != nil {
			return err
		}
		// The owner signs the namespace with the bundle, so that the host
		// cannot register it in another namespace: the pinned one, which must
		// be the API key's.
		// Without a pinned one, the API key's namespace as the gateway says:
		// a lie makes the bundle unusable, not misplaced.
		ns := c.Namespace()
		if ns == "" {
			if ns, err = c.KeyNamespace(ctx); err != nil {
				return fmt.Errorf("asking the gateway for the API key's namespace (or set CLOISTER_NAMESPACE): %w", err)
			}
		}
		if m.Namespace != "" && m.Namespace != ns {
			return usageErr("manifest names namespace %q, not %q, the API key's (CLOISTER_NAMESPACE)", m.Namespace, ns)
		}
		m.Namespace = ns
		v, err := c.NextVersion(ctx, name)
		if err != nil {
			return err
		}
		m.Version = v
		progress("building bundle for %s/%s v%d (%d bytes of %s)", ns, name, v, len(module), kind)
		b, err := bundle.Build(m, module, key)
		if err != nil {
			return err
		}
		progress("signed with owner key; uploading %d bytes", len(b))
		fi, err := c.Deploy(ctx, name, b)
		if err != nil {
			return err
		}
		if *asJSON {
			return printJSON(fi)
		}
		fmt.Printf("deployed %s v%d  code sha256 %s  confidential: %s\n", fi.Name, fi.Version, fi.CodeHash, fi.Confidential)
		return nil
	}
}

// deployFolder finds what `fn deploy NAME DIR` deploys from dir: the one
// module or script it holds (.wasm, .js or .py) and its manifest.json, if
// there is one (manifest is then empty).
func deployFolder(dir string) (source, manifest string, err error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "", "", fmt.Errorf("reading folder: %w", err)
	}
	var found []string
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		switch filepath.Ext(e.Name()) {
		case ".wasm", ".js", ".py":
			found = append(found, e.Name())
		}
		if e.Name() == "manifest.json" {
			manifest = filepath.Join(dir, e.Name())
		}
	}
	switch len(found) {
	case 0:
		return "", "", usageErr("%s holds no function: want one .wasm module, .js or .py script (and optionally its manifest.json)", dir)
	case 1:
		return filepath.Join(dir, found[0]), manifest, nil
	default:
		return "", "", usageErr("%s holds several functions (%s): name the file to deploy", dir, strings.Join(found, ", "))
	}
}

func fnList(fs *pflag.FlagSet) runFunc {
	asJSON := fs.Bool("json", false, "print JSON")
	return func(ctx context.Context, _ []string) error {
		c, err := newClient()
		if err != nil {
			return err
		}
		fns, err := c.List(ctx)
		if err != nil {
			return err
		}
		if *asJSON {
			return printJSON(fns)
		}
		// As in printList: Flush is the write that can fail.
		tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tVERSION\tCONFIDENTIAL\tCODE SHA256\tCREATED") // buffered: see above
		for _, f := range fns {
			// Buffered, as the header.
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\n", f.Name, f.Version, f.Confidential, short(f.CodeHash), f.Created.Format("2006-01-02 15:04:05"))
		}
		return tw.Flush()
	}
}

func fnGet(fs *pflag.FlagSet) runFunc {
	asJSON := fs.Bool("json", false, "print JSON")
	version := fs.Int("version", 0, "version (default latest)")
	return func(ctx context.Context, pos []string) error {
		if len(pos) != 1 {
			return usageErr("usage: cloister fn get NAME [--version V] [--json]")
		}
		c, err := newClient()
		if err != nil {
			return err
		}
		f, err := c.Get(ctx, pos[0], *version)
		if err != nil {
			return err
		}
		if *asJSON {
			return printJSON(f)
		}
		fmt.Printf("name:          %s/%s\nversion:       %d (latest %d)\nconfidential:  %s\ncode sha256:   %s\nbundle sha256: %s\ncreated:       %s\nmanifest:      %s\n",
			f.Namespace, f.Name, f.Version, f.Latest, f.Confidential, f.CodeHash, f.BundleHash, f.Created.Format("2006-01-02 15:04:05"), f.Manifest)
		return nil
	}
}

func fnDelete(fs *pflag.FlagSet) runFunc {
	return func(ctx context.Context, pos []string) error {
		if len(pos) != 1 {
			return usageErr("usage: cloister fn delete NAME")
		}
		c, err := newClient()
		if err != nil {
			return err
		}
		if err := c.Delete(ctx, pos[0]); err != nil {
			return err
		}
		fmt.Printf("deleted %s\n", pos[0])
		return nil
	}
}

// fnPolicy shows a function's invoker policy or, with --invokers, changes
// it: signed with the owner key, certified by the coordinator, enforced by
// the workers for every version, without a deploy.
func fnPolicy(fs *pflag.FlagSet) runFunc {
	const use = "usage: cloister fn policy NAME [--invokers owner|any|HEXKEY,...] [--key F] [--json]"
	invokers := fs.String("invokers", "", "the new policy: owner, any, or caller public keys (hex, as 'keys new' prints them), comma-separated")
	keyPath := fs.String("key", defaultKeyPath(), "the owner key that signs the change")
	asJSON := fs.Bool("json", false, "print JSON")
	return func(ctx context.Context, pos []string) error {
		if len(pos) != 1 {
			return usageErr(use)
		}
		c, err := newClient()
		if err != nil {
			return err
		}
		var p *client.InvokerPolicy
		if *invokers == "" {
			if p, err = c.Policy(ctx, pos[0]); err != nil {
				return err
			}
			if p == nil {
				if *asJSON {
					return printJSON(map[string]any{"name": pos[0], "invokers": client.InvokersAny, "policy_version": 0})
				}
				fmt.Printf("%s has no invoker policy (deployed before policies existed): anyone may invoke it\n", pos[0])
				return nil
			}
		} else {
			kind, keys, err := parseInvokers(*invokers)
			if err != nil {
				return usageErr("--invokers: %v", err)
			}
			owner, err := loadKey(*keyPath)
			if err != nil {
				return err
			}
			if p, err = c.SetPolicy(ctx, pos[0], kind, keys, owner); err != nil {
				return err
			}
		}
		if *asJSON {
			return printJSON(policyJSON(p))
		}
		fmt.Printf("%s/%s invoker policy v%d: %s (owner %s, certified %s)\n", p.Namespace, p.Name, p.Version, p.Kind,
			hex.EncodeToString(p.OwnerKey), p.IssuedAt.Format("2006-01-02 15:04:05"))
		for _, k := range p.Keys {
			fmt.Printf("  %s\n", hex.EncodeToString(k))
		}
		return nil
	}
}

// parseInvokers reads owner, any, or comma-separated hex public keys.
func parseInvokers(s string) (string, []ed25519.PublicKey, error) {
	switch s {
	case client.InvokersOwner, client.InvokersAny:
		return s, nil, nil
	}
	var keys []ed25519.PublicKey
	for _, h := range strings.Split(s, ",") {
		k, err := hex.DecodeString(strings.TrimSpace(h))
		if err != nil || len(k) != ed25519.PublicKeySize {
			return "", nil, fmt.Errorf("%q is not owner, any or a hex Ed25519 public key", h)
		}
		keys = append(keys, k)
	}
	return client.InvokersKeys, keys, nil
}

func policyJSON(p *client.InvokerPolicy) map[string]any {
	keys := make([]string, len(p.Keys))
	for i, k := range p.Keys {
		keys[i] = hex.EncodeToString(k)
	}
	return map[string]any{"namespace": p.Namespace, "name": p.Name, "policy_version": p.Version, "invokers": p.Kind,
		"keys": keys, "owner_key": hex.EncodeToString(p.OwnerKey), "issued_at": p.IssuedAt}
}
