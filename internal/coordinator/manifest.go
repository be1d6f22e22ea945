package coordinator

import (
	"bytes"
	"cmp"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/artoken"
	"github.com/cloister-faas/cloister/internal/attest"
	"github.com/cloister-faas/cloister/internal/bundle"
	"github.com/cloister-faas/cloister/internal/bus"
	"github.com/cloister-faas/cloister/internal/certs"
	"github.com/cloister-faas/cloister/internal/strictjson"
	"github.com/cloister-faas/cloister/internal/wire"
)

// Manifest is the deployment manifest: the reference values per TEE kind
// that workers must match to join, how long their certificates last, and
// the admin keys that may sign the next manifest. Its sha256 is bound into
// the coordinator's evidence, so a client that pins it knows exactly which
// workers may serve it.
type Manifest struct {
	// Version counts changes: each accepted manifest has the previous one's
	// version plus one.
	Version int `json:"version"`
	// Workers holds the reference values per TEE kind (sim measurements,
	// sev_snp and tdx sections) and which kinds are allowed.
	Workers attest.Policy `json:"workers"`
	CertTTL string        `json:"cert_ttl"`
	// AdminKeys are hex Ed25519 public keys; a change needs a signature by one of them.
	AdminKeys []string `json:"admin_keys,omitempty"`
	// Previous is sha256 of the manifest this one replaces ("" for the first).
	Previous string `json:"previous,omitempty"`
	// FunctionLimits caps the limits a function's manifest may ask for
	// (nil or zero fields: DefaultFunctionLimits). A deploy that asks for
	// more is refused with invalid_manifest.
	FunctionLimits *FunctionLimits `json:"function_limits,omitempty"`
}

// FunctionLimits are the operator's caps on function manifests' limits,
// within the hard ceilings of internal/bundle.
type FunctionLimits struct {
	MemoryPages    uint32 `json:"memory_pages,omitempty"`
	TimeoutMS      int    `json:"timeout_ms,omitempty"`
	MaxInputBytes  int    `json:"max_input_bytes,omitempty"`
	MaxOutputBytes int    `json:"max_output_bytes,omitempty"`
	Concurrency    int    `json:"concurrency,omitempty"`
}

// DefaultFunctionLimits are the caps of a manifest that sets none: 1 GiB
// of memory and 256 concurrent calls per worker; the hard ceilings for
// the rest.
var DefaultFunctionLimits = FunctionLimits{
	MemoryPages: 16384, TimeoutMS: bundle.MaxTimeoutMS, MaxInputBytes: bundle.MaxInputBytes,
	MaxOutputBytes: bundle.MaxOutputBytes, Concurrency: 256,
}

// caps returns m's function caps with defaults filled in.
func (m Manifest) caps() FunctionLimits {
	c := DefaultFunctionLimits
	if f := m.FunctionLimits; f != nil {
		c.MemoryPages = cmp.Or(f.MemoryPages, c.MemoryPages)
		c.TimeoutMS = cmp.Or(f.TimeoutMS, c.TimeoutMS)
		c.MaxInputBytes = cmp.Or(f.MaxInputBytes, c.MaxInputBytes)
		c.MaxOutputBytes = cmp.Or(f.MaxOutputBytes, c.MaxOutputBytes)
		c.Concurrency = cmp.Or(f.Concurrency, c.Concurrency)
	}
	return c
}

// CheckLimits refuses a function's limits (defaults applied) over the caps.
func (c FunctionLimits) CheckLimits(l bundle.Limits) error {
	for _, x := range []struct {
		what      string
		got, caps int64
	}{
		{"memory_pages", int64(l.MemoryPages), int64(c.MemoryPages)},
		{"timeout_ms", int64(l.TimeoutMS), int64(c.TimeoutMS)},
		{"max_input_bytes", int64(l.MaxInputBytes), int64(c.MaxInputBytes)},
		{"max_output_bytes", int64(l.MaxOutputBytes), int64(c.MaxOutputBytes)},
		{"concurrency", int64(l.Concurrency), int64(c.Concurrency)},
	} {
		if x.got > x.caps {
			return fmt.Errorf("limits.%s %d is over this platform's cap of %d (the deployment manifest's function_limits)", x.what, x.got, x.caps)
		}
	}
	return nil
}

// validate checks that each cap set is between the default a function
// gets without asking (so that such a function always deploys) and the
// hard ceiling.
func (c FunctionLimits) validate() error {
	d := bundle.DefaultManifest("x").Limits
	in := func(v, lo, hi int64) bool { return v == 0 || v >= lo && v <= hi }
	if !in(int64(c.MemoryPages), int64(d.MemoryPages), bundle.MaxMemoryPages) || !in(int64(c.TimeoutMS), int64(d.TimeoutMS), bundle.MaxTimeoutMS) ||
		!in(int64(c.MaxInputBytes), int64(d.MaxInputBytes), bundle.MaxInputBytes) || !in(int64(c.MaxOutputBytes), int64(d.MaxOutputBytes), bundle.MaxOutputBytes) ||
		!in(int64(c.Concurrency), int64(d.Concurrency), bundle.MaxConcurrency) {
		return fmt.Errorf("manifest function_limits %+v: each must be between a function's default limit and the hard ceiling", c)
	}
	return nil
}

// Validate checks the manifest.
func (m Manifest) Validate() error {
	if m.Version < 1 {
		return fmt.Errorf("manifest version %d: want 1 or more", m.Version)
	}
	if err := m.Workers.Validate(); err != nil {
		return fmt.Errorf("manifest workers policy: %w", err)
	}
	if _, err := m.certTTL(); err != nil {
		return err
	}
	if m.FunctionLimits != nil {
		if err := m.FunctionLimits.validate(); err != nil {
			return err
		}
	}
	for _, k := range m.AdminKeys {
		if b, err := hex.DecodeString(k); err != nil || len(b) != ed25519.PublicKeySize {
			return fmt.Errorf("manifest admin key %q is not a hex Ed25519 public key", k)
		}
	}
	return nil
}

func (m Manifest) certTTL() (time.Duration, error) {
	if m.CertTTL == "" {
		return time.Hour, nil
	}
	d, err := time.ParseDuration(m.CertTTL)
	if err != nil || d < time.Minute {
		return 0, fmt.Errorf("manifest cert_ttl %q: want a duration of at least 1m", m.CertTTL)
	}
	return d, nil
}

// manifestDomain separates manifest signatures from every other signature.
const manifestDomain = "cloister-manifest-v1\n"

// SignManifest signs the exact bytes of a manifest document with an admin key.
func SignManifest(raw []byte, key ed25519.PrivateKey) wire.ManifestSignature {
	return wire.ManifestSignature{
		Key: hex.EncodeToString(key.Public().(ed25519.PublicKey)),
		Sig: ed25519.Sign(key, append([]byte(manifestDomain), raw...)),
	}
}

// ManifestHash is the hex sha256 of a manifest document's bytes.
func ManifestHash(raw []byte) string {
	h := sha256.Sum256(raw)
	return hex.EncodeToString(h[:])
}

// Errors of a manifest change.
var (
	ErrManifestSignature = errors.New("coordinator: manifest change is not signed by an admin key of the current manifest")
	ErrManifestSequence  = errors.New("coordinator: manifest change does not follow the current manifest")
)

// checkSuccessor verifies that next may replace cur: it is valid, follows
// it by one version and by hash, and an admin key of cur signed it.
func checkSuccessor(cur Manifest, curHash string, next wire.SignedManifest) (Manifest, error) {
	var m Manifest
	// The document is hashed and signed as bytes, and JSON encoders compact
	// what they carry: only compact documents keep their bytes on the way.
	var compact bytes.Buffer
	if err := json.Compact(&compact, next.Manifest); err != nil || !bytes.Equal(compact.Bytes(), next.Manifest) {
		return m, apierr.New(apierr.InvalidManifest, "the manifest must be compact JSON (as json.Marshal writes it)")
	}
	if err := strictjson.Unmarshal(next.Manifest, &m); err != nil {
		return m, apierr.New(apierr.InvalidManifest, "parsing the manifest: %v", err)
	}
	if err := m.Validate(); err != nil {
		return m, apierr.Wrap(apierr.InvalidManifest, err)
	}
	if m.Version != cur.Version+1 || m.Previous != curHash {
		return m, apierr.New(apierr.Conflict, "%v: it has version %d and previous %s; the current manifest is version %d with hash %s",
			ErrManifestSequence, m.Version, short(m.Previous), cur.Version, short(curHash))
	}
	msg := append([]byte(manifestDomain), next.Manifest...)
	for _, s := range next.Signatures {
		if !slices.Contains(cur.AdminKeys, s.Key) {
			continue
		}
		k, _ := hex.DecodeString(s.Key) // a key that does not decode fails the length check below
		if len(k) == ed25519.PublicKeySize && ed25519.Verify(k, msg, s.Sig) {
			return m, nil
		}
	}
	if len(cur.AdminKeys) == 0 {
		return m, apierr.New(apierr.Forbidden, "%v: the current manifest names no admin keys, so it cannot be changed", ErrManifestSignature)
	}
	return m, apierr.New(apierr.Forbidden, "%v", ErrManifestSignature)
}

func short(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return h
}

// history is the manifest history on disk: DIR/manifests/NNNNNN.json, one
// signed manifest per version. It is public data; its integrity comes from
// the hash chain and the admin signatures, which load re-checks.
func historyDir(dir string) string { return filepath.Join(dir, "manifests") }

func loadHistory(dir string) ([]wire.SignedManifest, error) {
	ents, err := os.ReadDir(historyDir(dir))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading manifest history: %w", err)
	}
	var names []string
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".json") {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	var out []wire.SignedManifest
	var cur Manifest
	for i, n := range names {
		b, err := os.ReadFile(filepath.Join(historyDir(dir), n))
		if err != nil {
			return nil, fmt.Errorf("reading manifest history: %w", err)
		}
		var sm wire.SignedManifest
		if err := json.Unmarshal(b, &sm); err != nil {
			return nil, fmt.Errorf("manifest history %s: %w", n, err)
		}
		if i == 0 {
			if err := strictjson.Unmarshal(sm.Manifest, &cur); err != nil {
				return nil, fmt.Errorf("manifest history %s: %w", n, err)
			}
		} else {
			next, err := checkSuccessor(cur, ManifestHash(out[i-1].Manifest), sm)
			if err != nil {
				return nil, fmt.Errorf("manifest history %s does not follow its predecessor: %w", n, err)
			}
			cur = next
		}
		out = append(out, sm)
	}
	return out, nil
}

// setManifest installs m. Callers hold c.mu or are constructing c.
func (c *Coordinator) setManifest(m Manifest, raw []byte) {
	c.m = m
	c.manifest = append([]byte(nil), raw...)
	c.mhash = sha256.Sum256(raw)
	c.attCache = nil
}

// Manifest returns the current manifest and its document bytes.
func (c *Coordinator) Manifest() (Manifest, []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m, append([]byte(nil), c.manifest...)
}

// SetManifest applies a signed manifest change: it must follow the current
// manifest and carry a signature by one of its admin keys. Admitted workers
// whose evidence no longer satisfies the new reference values are revoked:
// they leave the attestation document and get no more keys.
func (c *Coordinator) SetManifest(ctx context.Context, sm wire.SignedManifest) (*wire.ManifestChange, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	m, err := checkSuccessor(c.m, hex.EncodeToString(c.mhash[:]), sm)
	if err != nil {
		return nil, err
	}
	// Decide the revocations here, once: the record carries them, so that
	// every coordinator applies the same whenever it replays it.
	revoked := map[string]string{}
	for id, w := range c.workers {
		if w.claims == nil {
			revoked[id] = w.certHash
			continue
		}
		if err := attest.Validate(w.claims, m.Workers, w.reportData, c.now()); err != nil {
			revoked[id] = w.certHash
			c.log.Warn("revoking worker: the new manifest drops its reference values", "worker", id, "err", err)
		}
	}
	if err := c.appendControl(ctx, controlRecord{Kind: "manifest", Signed: &sm, Revoked: revoked}); err != nil {
		return nil, err
	}
	change := &wire.ManifestChange{Version: m.Version, ManifestHash: hex.EncodeToString(c.mhash[:])}
	for id := range revoked {
		change.Revoked = append(change.Revoked, id)
	}
	slices.Sort(change.Revoked)
	c.log.Info("manifest changed", "version", m.Version, "manifest_sha256", change.ManifestHash, "revoked", len(change.Revoked))
	if c.nc != nil {
		if b, err := json.Marshal(change); err == nil {
			_ = c.nc.Publish(bus.SubjectManifestChanged, b) // a hint: workers also check the manifest when they renew
		}
	}
	return change, nil
}

// History returns every manifest since the first, oldest first.
func (c *Coordinator) History() []wire.SignedManifest {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.history)
}

func (c *Coordinator) handleManifestSet(ctx context.Context, b []byte) (any, error) {
	var sm wire.SignedManifest
	if err := json.Unmarshal(b, &sm); err != nil || len(sm.Manifest) == 0 {
		return nil, apierr.New(apierr.BadRequest, "malformed signed manifest")
	}
	return c.SetManifest(ctx, sm)
}

func (c *Coordinator) handleManifestHistory(ctx context.Context, _ []byte) (any, error) {
	return wire.ManifestHistory{Manifests: c.History()}, nil
}

// TokenTTL is how long an attestation-result token is valid (60 s, as docs/operations.md says).
const TokenTTL = 60 * time.Second

// ResultToken issues an attestation-result token (package artoken): the
// coordinator's own claims, the manifest its evidence binds and the
// workers it has admitted, signed by its identity key, valid for TokenTTL.
func (c *Coordinator) ResultToken() (string, error) {
	doc, err := c.Attestation()
	if err != nil {
		return "", err
	}
	now := c.now()
	jti := make([]byte, 12)
	rand.Read(jti)
	cl := artoken.Claims{
		Issuer: artoken.Issuer, Subject: hex.EncodeToString(c.IdentityKey()),
		IssuedAt: now.Unix(), Expires: now.Add(TokenTTL).Unix(), ID: hex.EncodeToString(jti),
		Profile: artoken.Profile, Status: "affirming",
		TEE: c.tee.Kind(), TCB: attest.EvidenceTCB(doc.Evidence), Measurement: hex.EncodeToString(c.tee.Measurement()),
		ManifestHash: doc.ManifestHash, EvidenceHash: ManifestHash(doc.Evidence.Raw),
	}
	for _, s := range doc.Workers {
		if w, err := certs.OpenWorker(s, c.IdentityKey()); err == nil {
			cl.Workers = append(cl.Workers, artoken.Worker{ID: w.WorkerID, TEE: w.TEE, TCB: w.TCB, Measurement: w.Measurement, NotAfter: w.NotAfter})
		}
	}
	return artoken.Issue(c.identity, cl)
}

func (c *Coordinator) handleResultToken(ctx context.Context, _ []byte) (any, error) {
	t, err := c.ResultToken()
	if err != nil {
		return nil, err
	}
	return wire.ResultToken{Token: t}, nil
}
