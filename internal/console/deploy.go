package console

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/cloister-faas/cloister/client"
	"github.com/cloister-faas/cloister/internal/bundle"
)

// UsageError is a deploy the owner asked for wrongly: a bad name, file or
// manifest. It is refused before anything is signed or sent.
type UsageError struct{ msg string }

func (e *UsageError) Error() string { return e.msg }

func usage(format string, a ...any) error { return &UsageError{msg: fmt.Sprintf(format, a...)} }

// PrepareManifest is the manifest `cloister fn deploy NAME FILE` would
// sign: manifestJSON (a draft; empty: the defaults) for the function name,
// with the runtime of the file's kind (.wasm, .js or .py) unless the draft
// chose one. Its namespace and version are set by Deploy.
func PrepareManifest(name, filename string, manifestJSON []byte) (bundle.Manifest, error) {
	switch strings.ToLower(filepath.Ext(filename)) {
	case ".wasm", ".js", ".py":
	default:
		return bundle.Manifest{}, usage("%q is not a .wasm module, a .js or a .py script", filename)
	}
	m, err := bundle.ManifestFor(name, filename, manifestJSON)
	if err != nil {
		return bundle.Manifest{}, usage("%v", err)
	}
	return m, nil
}

// Deploy signs code with m as `cloister fn deploy` does and uploads it: for
// the client's pinned namespace (or else the API key's, as the gateway
// says: a lie makes the bundle unusable, not misplaced), at the next
// version, signed by owner.
func Deploy(ctx context.Context, c *client.Client, m bundle.Manifest, code []byte, owner ed25519.PrivateKey) (*client.FunctionInfo, error) {
	ns := c.Namespace()
	if ns == "" {
		var err error
		if ns, err = c.KeyNamespace(ctx); err != nil {
			return nil, fmt.Errorf("asking the gateway for the API key's namespace: %w", err)
		}
	}
	if m.Namespace != "" && m.Namespace != ns {
		return nil, usage("manifest names namespace %q, not %q, the API key's", m.Namespace, ns)
	}
	m.Namespace = ns
	v, err := c.NextVersion(ctx, m.Name)
	if err != nil {
		return nil, fmt.Errorf("asking for the next version: %w", err)
	}
	m.Version = v
	b, err := bundle.Build(m, code, owner)
	if err != nil {
		return nil, usage("building the bundle: %v", err)
	}
	return c.Deploy(ctx, m.Name, b)
}
