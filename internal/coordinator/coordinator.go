// Package coordinator is Cloister's attestation and key broker. It runs in a
// TEE, holds the deployment manifest, admits workers whose evidence matches
// it, certifies function versions, and releases per-function HPKE keys only
// to admitted workers whose TEE the function's policy accepts.
//
// It must never send a key in the clear: function keys leave it sealed to a
// certified worker's key-exchange key. Its own secrets rest on disk sealed
// with the TEE's sealing key.
//
// It must never run tenant code: an admitted worker compiles and
// initialises each deployed module and states the snapshot hash under its
// certified key, which the coordinator verifies before it certifies it
// (docs/adr/0005-init-on-worker.md).
package coordinator

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/semaphore"

	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/attest"
	"github.com/cloister-faas/cloister/internal/bundle"
	"github.com/cloister-faas/cloister/internal/bus"
	"github.com/cloister-faas/cloister/internal/certs"
	"github.com/cloister-faas/cloister/internal/journal"
	"github.com/cloister-faas/cloister/internal/ledger"
	"github.com/cloister-faas/cloister/internal/receipt"
	"github.com/cloister-faas/cloister/internal/registry"
	"github.com/cloister-faas/cloister/internal/sandbox"
	"github.com/cloister-faas/cloister/internal/seal"
	fnstate "github.com/cloister-faas/cloister/internal/state"
	"github.com/cloister-faas/cloister/internal/tee"
	"github.com/cloister-faas/cloister/internal/tee/sim"
	"github.com/cloister-faas/cloister/internal/wire"
)

// Config configures a Coordinator.
type Config struct {
	// Dir holds the sealed coordinator state.
	Dir      string
	TEE      tee.TEE
	Manifest Manifest
	Stores   *bus.Stores
	// Engine is no longer used and may be nil: since ADR 0005 an admitted
	// worker compiles and initialises a function at deploy, and the
	// coordinator runs no guest code (docs/adr/0005-init-on-worker.md).
	Engine *sandbox.Engine
	// LedgerDir holds the transparency log of receipts; "" disables it.
	LedgerDir string
	// StateLimits bound each function's sealed state (zero: the defaults).
	StateLimits fnstate.Limits
	// StateLease is the length of workers' read leases on state (0: the
	// default, 2 s; negative: no leases). See docs/state.md.
	StateLease time.Duration
	// Verifier verifies workers' hardware evidence (nil: collateral from
	// the network, cached in memory).
	Verifier *attest.Verifier
	// PeerPolicy holds the reference values of the coordinators' own
	// evidence: secrets move only to and from a peer coordinator whose
	// evidence meets them (peer recovery, peers.go).
	PeerPolicy attest.Policy
	// RecoveryKey, if set, is the owner's recovery public key: the active
	// coordinator keeps the secrets sealed to it, for when no coordinator
	// survives (recovery.go).
	RecoveryKey []byte
	// RecoveryAfter is how long a coordinator without secrets waits for a
	// peer before it also asks the owner for recovery (0: 10 s).
	RecoveryAfter time.Duration
	// Conn is the coordinator's NATS connection, used before Serve to ask
	// a peer for the secrets.
	Conn   *nats.Conn
	Logger *slog.Logger
	Now    func() time.Time
}

// Coordinator is safe for concurrent use.
type Coordinator struct {
	cfg      *Config
	tee      tee.TEE
	identity ed25519.PrivateKey
	master   []byte
	manifest []byte
	mhash    [32]byte
	m        Manifest
	reg      *registry.Registry
	bundles  jetstream.ObjectStore
	ledger   *ledger.Log
	receipts *receipt.Verifier
	js       jetstream.JetStream
	anchor   *fnstate.Anchor
	log      *slog.Logger
	now      func() time.Time

	dir      string
	verifier *attest.Verifier

	// reading bounds the bundle bytes being read and checked at once, so
	// that concurrent large deploys queue instead of timing out together
	// and the coordinator's memory stays bounded.
	reading *semaphore.Weighted

	// genesisRaw is the configured genesis manifest and genesisHash its
	// hash: a peer must have been configured with the same.
	genesisRaw  []byte
	genesisHash string
	replicas    int
	node        string
	// control is the control journal (control.go); term says whether a
	// journal append found that another coordinator wrote first.
	control *journal.Journal
	kv      jetstream.KeyValue // bus.BucketCoord
	term    atomic.Pointer[term]
	// active is set while this coordinator holds the lease and serves.
	active atomic.Bool

	nc       *nats.Conn // set by Serve, for events
	mu       sync.Mutex // guards the fields below and the manifest fields above
	attCache *wire.Attestation
	attTime  time.Time
	workers  map[string]admitted
	// seen is when each admitted worker last advertised itself (or was
	// admitted): the attestation document lists only the living.
	seen map[string]time.Time
	// me is this coordinator's lease while it is active; standbys are
	// the standby coordinators' announcements, by node.
	me       LeaseHolder
	standbys map[string]wire.CoordinatorPeer
	// revoked maps a worker id to the hash of the certificate a manifest
	// change revoked; that certificate gets no more keys.
	revoked map[string]string
	history []wire.SignedManifest
	// policyMax is the highest invoker policy version certified per
	// function ("ns/name"), and policyUpdates the owner updates certified
	// (the SHA-256 of their signed bodies), from the control journal:
	// what storage cannot roll back (policy.go).
	policyMax     map[string]int
	policyUpdates map[string]bool
}

// admitted is a worker certificate the coordinator issued, with what the
// worker's evidence said, so that a manifest change can re-check it.
type admitted struct {
	signed     certs.Signed
	notAfter   time.Time
	certHash   string
	claims     *attest.Claims
	reportData [tee.ReportDataSize]byte
	evidence   tee.Evidence
}

// state is what the coordinator keeps sealed on disk.
type state struct {
	IdentitySeed []byte `json:"identity_seed"`
	Master       []byte `json:"master"`
}

// New returns a coordinator with the deployment's secrets: its own sealed
// state, new secrets if the deployment on NATS has none yet, or, for a
// coordinator that joins, the secrets of an attested peer, which it waits
// for until ctx ends (peers.go). It follows the journals until Serve makes
// it the active coordinator.
func New(ctx context.Context, cfg Config) (*Coordinator, error) {
	if err := cfg.Manifest.Validate(); err != nil {
		return nil, err
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Verifier == nil {
		cfg.Verifier = &attest.Verifier{Now: cfg.Now}
	}
	if cfg.Stores == nil || cfg.Stores.JS == nil {
		return nil, errors.New("coordinator: no JetStream stores")
	}
	genesisRaw, err := json.Marshal(cfg.Manifest)
	if err != nil {
		return nil, err
	}
	node, err := nodeID(cfg.Dir)
	if err != nil {
		return nil, err
	}
	kv, err := openCoordBucket(ctx, cfg.Stores)
	if err != nil {
		return nil, err
	}
	st, err := obtainSecrets(ctx, &cfg, kv, ManifestHash(genesisRaw))
	if err != nil {
		return nil, err
	}
	c := &Coordinator{
		cfg:           &cfg,
		tee:           cfg.TEE,
		identity:      ed25519.NewKeyFromSeed(st.IdentitySeed),
		master:        st.Master,
		dir:           cfg.Dir,
		verifier:      cfg.Verifier,
		revoked:       map[string]string{},
		policyMax:     map[string]int{},
		policyUpdates: map[string]bool{},
		reading:       semaphore.NewWeighted(MaxReadingBytes),
		reg:           registry.New(cfg.Stores.JS, cfg.Stores.Registry),
		bundles:       cfg.Stores.Bundles,
		js:            cfg.Stores.JS,
		log:           cfg.Logger.WithGroup("coordinator"),
		now:           cfg.Now,
		workers:       map[string]admitted{},
		seen:          map[string]time.Time{},
		standbys:      map[string]wire.CoordinatorPeer{},
		genesisRaw:    genesisRaw,
		genesisHash:   ManifestHash(genesisRaw),
		replicas:      max(cfg.Stores.Replicas, 1),
		node:          node,
		kv:            kv,
	}
	c.term.Store(newTerm())
	c.history = []wire.SignedManifest{{Manifest: genesisRaw}}
	c.setManifest(cfg.Manifest, genesisRaw)
	if c.control, err = c.openControl(ctx); err != nil {
		return nil, err
	}
	if _, err := c.control.CatchUp(ctx); err != nil {
		return nil, fmt.Errorf("reading the control journal: %w", err)
	}
	c.receipts = receipt.NewVerifier(c.IdentityKey())
	if err := c.openFollowers(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// openFollowers opens the state anchor and the ledger as standbys that
// follow their journals until lead.
func (c *Coordinator) openFollowers(ctx context.Context) error {
	// The anchor's log is the anchor journal; a file log left in
	// Dir/state by an earlier version moves into it at the first lead.
	var err error
	if c.anchor, err = fnstate.OpenAnchor(fnstate.AnchorConfig{Dir: filepath.Join(c.cfg.Dir, "state"), Master: c.master,
		Limits: c.cfg.StateLimits, Lease: c.cfg.StateLease, Logger: c.cfg.Logger,
		JS: c.js, Replicas: c.replicas, Standby: true}); err != nil {
		return fmt.Errorf("opening the state anchor: %w", err)
	}
	if c.cfg.LedgerDir == "" {
		return nil
	}
	signer, verifier, err := ledger.NewSigner(LedgerOrigin, c.identity)
	if err != nil {
		_ = c.anchor.Close() // the error below is the one to report
		return err
	}
	// The ledger's order is the ledger journal's: every coordinator's tile
	// log is the same function of it.
	if c.ledger, err = ledger.Open(ctx, ledger.Options{Dir: c.cfg.LedgerDir, Signer: signer, Verifier: verifier, BatchMaxAge: LedgerBatchAge,
		Logger: c.cfg.Logger, Journal: &ledger.JournalOptions{JS: c.js, Replicas: c.replicas, Key: c.master}, Standby: true}); err != nil {
		_ = c.anchor.Close() // the error below is the one to report
		return fmt.Errorf("opening the ledger: %w", err)
	}
	return nil
}

// term is one period as the active coordinator (or the standby before
// it): fenced is closed when a journal append found that another
// coordinator wrote first, and this one is then no longer the active one,
// whatever its lease says.
type term struct {
	fenced chan struct{}
	once   sync.Once
}

func newTerm() *term { return &term{fenced: make(chan struct{})} }

func (t *term) fence() { t.once.Do(func() { close(t.fenced) }) }

// fence fences the current term.
func (c *Coordinator) fence() { c.term.Load().fence() }

// LedgerBatchAge is how long the ledger collects appends before it writes
// them (or until 4096 are waiting). Each write costs the same few files
// and fsyncs whatever its size: on the 2-core test machine about 16 ms of
// CPU, which at 50 ms batches and 1,000 receipts/s was the ledger's largest
// cost per receipt. Nobody waits on it but the workers' background
// senders (an invocation's answer does not) and a client that fetches an
// inclusion proof.
const LedgerBatchAge = time.Second

// LedgerOrigin is the origin line of the ledger's checkpoints.
const LedgerOrigin = "cloister/ledger"

// Close releases the ledger, flushing what was appended, and the state
// anchor's log.
func (c *Coordinator) Close(ctx context.Context) error {
	err := c.anchor.Close()
	if c.ledger != nil {
		err = errors.Join(err, c.ledger.Close(ctx))
	}
	return err
}

// errNoState: the data directory holds no sealed state yet.
var errNoState = errors.New("coordinator: no sealed state")

const stateAAD = "cloister-coordinator-state-v1"

// loadState unseals the coordinator's secrets from dir (errNoState if
// there are none yet).
func loadState(dir string, t tee.TEE) (*state, error) {
	g, err := sealGCM(t)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(filepath.Join(dir, "state.sealed"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, errNoState
	}
	if err != nil {
		return nil, fmt.Errorf("reading coordinator state: %w", err)
	}
	if len(b) < g.NonceSize() {
		return nil, errors.New("coordinator state is truncated")
	}
	pt, err := g.Open(nil, b[:g.NonceSize()], b[g.NonceSize():], []byte(stateAAD))
	if err != nil {
		return nil, errors.New("unsealing coordinator state: wrong TEE seal key or tampered file")
	}
	return parseState(pt)
}

func parseState(pt []byte) (*state, error) {
	var st state
	if err := json.Unmarshal(pt, &st); err != nil || len(st.IdentitySeed) != ed25519.SeedSize || len(st.Master) != 32 {
		return nil, errors.New("coordinator state is malformed")
	}
	return &st, nil
}

// saveState seals st to dir with the TEE's sealing key.
func saveState(dir string, t tee.TEE, st *state) error {
	g, err := sealGCM(t)
	if err != nil {
		return err
	}
	pt, _ := json.Marshal(st) // a struct of byte slices: cannot fail
	nonce := make([]byte, g.NonceSize())
	rand.Read(nonce)
	out := g.Seal(nonce, nonce, pt, []byte(stateAAD))
	clear(pt)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating coordinator dir: %w", err)
	}
	path := filepath.Join(dir, "state.sealed")
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, out, 0o600); err != nil {
		return fmt.Errorf("writing coordinator state: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("writing coordinator state: %w", err)
	}
	return nil
}

func sealGCM(t tee.TEE) (cipher.AEAD, error) {
	key, err := t.SealKey()
	if err != nil {
		return nil, fmt.Errorf("getting seal key: %w", err)
	}
	return newGCM(key)
}

func newGCM(key []byte) (cipher.AEAD, error) {
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

// IdentityKey returns the coordinator's public identity key.
func (c *Coordinator) IdentityKey() ed25519.PublicKey { return c.identity.Public().(ed25519.PublicKey) }

// ManifestHash returns sha256 of the current deployment manifest.
func (c *Coordinator) ManifestHash() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return hex.EncodeToString(c.mhash[:])
}

// subscribe serves the active coordinator's subjects and returns the
// subscriptions.
func (c *Coordinator) subscribe(ctx context.Context, nc *nats.Conn) ([]*nats.Subscription, error) {
	handlers := map[string]bus.Handler{
		bus.SubjectAdmit:           c.handleAdmit,
		bus.SubjectRegister:        c.handleRegister,
		bus.SubjectPolicy:          c.handlePolicy,
		bus.SubjectFunctionKey:     c.handleFunctionKey,
		bus.SubjectManifestSet:     c.handleManifestSet,
		bus.SubjectManifestHistory: c.handleManifestHistory,
		bus.SubjectResultToken:     c.handleResultToken,
	}
	var subs []*nats.Subscription
	for subj, h := range handlers {
		s, err := bus.Serve(ctx, nc, subj, bus.CoordinatorQueue, 64, c.log, h)
		if err != nil {
			return subs, err
		}
		subs = append(subs, s)
	}
	// The hot paths travel in binary without a JSON envelope.
	type bytesHandler struct {
		h     bus.BytesHandler
		limit int
	}
	hot := map[string]bytesHandler{bus.SubjectStateAnchor: {c.handleStateAnchor, 256}}
	if c.ledger != nil {
		// Appends wait for their batch to be durable: many in flight.
		hot[bus.SubjectLedgerAppend] = bytesHandler{c.handleLedgerAppend, 2048}
		hot[bus.SubjectLedgerLookup] = bytesHandler{c.handleLedgerLookup, 256}
		// The gateways serve the log's public files from here: they share
		// no disk with the coordinator. Leave room for the reply's headers.
		limit := nc.MaxPayload() - 4<<10
		hot[bus.SubjectLedgerRead] = bytesHandler{func(_ context.Context, b []byte) ([]byte, error) {
			return readLedgerFile(c.ledger.Dir(), string(b), limit)
		}, 64}
	}
	for subj, h := range hot {
		s, err := bus.ServeBytes(ctx, nc, subj, bus.CoordinatorQueue, h.limit, c.log, h.h)
		if err != nil {
			return subs, err
		}
		subs = append(subs, s)
	}
	// Attestation last: a caller that got the coordinator's attestation
	// (a worker about to ask for admission, a test waiting for the
	// coordinator) finds every other subject served.
	att, err := bus.Serve(ctx, nc, bus.SubjectAttestation, bus.CoordinatorQueue, 64, c.log,
		func(ctx context.Context, _ []byte) (any, error) { return c.Attestation() })
	if err != nil {
		return subs, err
	}
	return append(subs, att), nil
}

// Attestation returns the coordinator's attestation document: evidence that
// binds its identity key and manifest, and the certificates of the workers
// it has admitted that are still valid. Evidence is re-made once a minute so
// that it stays within clients' max age.
func (c *Coordinator) Attestation() (*wire.Attestation, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	if c.attCache == nil || now.Sub(c.attTime) >= time.Minute {
		rd := tee.BindReportData(wire.LabelCoordinator, c.IdentityKey(), c.mhash[:])
		ev, err := c.tee.Evidence(rd)
		if err != nil {
			return nil, fmt.Errorf("getting evidence: %w", err)
		}
		a := &wire.Attestation{Evidence: ev, IdentityKey: c.IdentityKey(), Manifest: c.manifest, ManifestHash: hex.EncodeToString(c.mhash[:])}
		if c.ledger != nil {
			a.LedgerOrigin = LedgerOrigin
		}
		if c.tee.Kind() == tee.KindSim {
			a.Warning = sim.Warning
		}
		c.attCache, c.attTime = a, now
	}
	doc := *c.attCache
	ids := make([]string, 0, len(c.workers))
	for id, w := range c.workers {
		if now.After(w.notAfter) {
			delete(c.workers, id)
			delete(c.seen, id)
			continue
		}
		if c.alive(id, now) {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	for _, id := range ids {
		doc.Workers = append(doc.Workers, c.workers[id].signed)
	}
	return &doc, nil
}

func (c *Coordinator) handleAdmit(ctx context.Context, b []byte) (any, error) {
	var req wire.AdmitRequest
	if err := json.Unmarshal(b, &req); err != nil {
		return nil, apierr.New(apierr.BadRequest, "malformed admit request")
	}
	if req.WorkerID == "" || len(req.SigningKey) != ed25519.PublicKeySize || len(req.KeyExchange) == 0 {
		return nil, apierr.New(apierr.BadRequest, "admit request lacks worker id or keys")
	}
	c.mu.Lock()
	m, mhash := c.m, hex.EncodeToString(c.mhash[:])
	c.mu.Unlock()
	claims, err := c.verifier.Verify(req.Evidence, m.Workers)
	if err != nil {
		c.log.Warn("refusing worker", "worker", req.WorkerID, "err", err)
		return nil, apierr.New(apierr.Forbidden, "worker evidence refused: %v", err)
	}
	rd := tee.BindReportData(wire.LabelWorker, req.SigningKey, req.KeyExchange, c.IdentityKey())
	if err := attest.Validate(claims, m.Workers, rd, c.now()); err != nil {
		c.log.Warn("refusing worker", "worker", req.WorkerID, "err", err)
		return nil, apierr.New(apierr.Forbidden, "worker evidence refused: %v", err)
	}
	ttl, _ := m.certTTL() // the manifest was validated when it was set: its TTL parses
	now := c.now().UTC()
	w := certs.Worker{
		WorkerID:        req.WorkerID,
		SigningKey:      req.SigningKey,
		KeyExchangeHash: certs.KeyExchangeHash(req.KeyExchange),
		TEE:             claims.Kind,
		TCB:             claims.TCB,
		Measurement:     hex.EncodeToString(claims.Measurement),
		EvidenceHash:    seal.SHA256Hex(req.Evidence.Raw),
		ManifestHash:    mhash,
		NotBefore:       now.Add(-time.Minute),
		NotAfter:        now.Add(ttl),
	}
	cert, err := certs.Sign(c.identity, certs.DomainWorker, w)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if hex.EncodeToString(c.mhash[:]) != mhash {
		c.mu.Unlock()
		return nil, apierr.New(apierr.Conflict, "the manifest changed during admission; retry")
	}
	// Durable before it is answered, so that the coordinator that takes
	// over knows the worker (control.go).
	err = c.appendControl(ctx, controlRecord{Kind: "admit", Admit: &admitRecord{WorkerID: w.WorkerID, Certificate: cert,
		NotAfter: w.NotAfter, Evidence: req.Evidence, ReportData: rd[:]}})
	if err == nil {
		// The claims just verified under the current manifest are the
		// ones to keep (the replay verifies again only elsewhere).
		a := c.workers[w.WorkerID]
		a.claims = claims
		c.workers[w.WorkerID] = a
		c.seen[w.WorkerID] = c.now()
	}
	c.mu.Unlock()
	if err != nil {
		return nil, apierr.New(apierr.Unavailable, "admitting worker: %v", err)
	}
	c.log.Info("admitted worker", "worker", req.WorkerID, "tee", claims.Kind, "not_after", w.NotAfter)
	return wire.AdmitResponse{Certificate: cert, IdentityKey: c.IdentityKey()}, nil
}

// MaxBundleSize bounds a bundle the coordinator will read.
const MaxBundleSize = 64 << 20

// MaxReadingBytes bounds the bundle bytes the coordinator reads and checks
// at once; further registrations wait their turn.
const MaxReadingBytes = 2 * MaxBundleSize

// handleRegister registers a function version. It is atomic: the version
// becomes visible (the registry's latest) only once its bundle was read
// and verified, an admitted worker's signed inspection of it (compiled and
// initialised there, never here) was verified, and its certificate
// signed, and not at all once the request's timeout has passed, so that a
// caller told "timeout" can rely on nothing having been registered.
func (c *Coordinator) handleRegister(ctx context.Context, b []byte) (any, error) {
	var req wire.RegisterRequest
	if err := json.Unmarshal(b, &req); err != nil || !bundle.ValidName(req.Namespace) || !bundle.ValidName(req.Name) || req.TimeoutMS < 0 {
		return nil, apierr.New(apierr.BadRequest, "malformed register request")
	}
	timeout := wire.DefaultDeployTimeout
	if req.TimeoutMS > 0 {
		timeout = time.Duration(req.TimeoutMS) * time.Millisecond
	}
	// Durations are measured on the local monotonic clock, not c.now
	// (which tests and the certificates' notion of time may move).
	deadline := time.Now().Add(timeout)
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	info, err := bus.ObjectInfo(ctx, c.bundles, req.Object)
	if err != nil {
		return nil, apierr.New(apierr.NotFound, "bundle object %q not found", req.Object)
	}
	if info.Size > MaxBundleSize {
		return nil, apierr.New(apierr.PayloadTooLarge, "bundle is %d bytes, limit %d", info.Size, MaxBundleSize)
	}
	weight := max(int64(info.Size), 1)
	if err := c.reading.Acquire(ctx, weight); err != nil {
		return nil, apierr.New(apierr.Timeout, "the deploy waited its %s timeout for other deploys to be checked; nothing was registered", timeout)
	}
	defer c.reading.Release(weight)
	raw, err := c.readBundle(ctx, req.Object)
	if err != nil {
		return nil, err
	}
	bd, err := bundle.Open(raw)
	if err != nil {
		return nil, bundleError(err)
	}
	if bd.Manifest.Name != req.Name {
		return nil, apierr.New(apierr.InvalidManifest, "bundle is for function %q, not %q", bd.Manifest.Name, req.Name)
	}
	// The namespace comes from the gateway, which is not trusted: register
	// the bundle only where its owner signed it for. A bundle signed for
	// another namespace, or for none (built before the field existed), has
	// no owner signature covering this registration: bundle_signature.
	if err := bd.Manifest.BoundTo(req.Namespace); err != nil {
		return nil, apierr.Wrap(apierr.BundleSignature, err)
	}
	c.mu.Lock()
	caps := c.m.caps()
	c.mu.Unlock()
	if err := caps.CheckLimits(bd.Manifest.Limits); err != nil {
		return nil, apierr.Wrap(apierr.InvalidManifest, err)
	}
	bundleHash := bundle.Hash(raw)
	ins, err := c.inspectBundle(ctx, req.Namespace, req.Object, bd, bundleHash)
	if err != nil {
		return nil, err
	}
	v := bd.Manifest.Version
	fk, err := seal.DeriveFunctionKey(c.master, seal.DefaultSuite, req.Namespace, req.Name, v, bd.CodeHash)
	if err != nil {
		return nil, err
	}
	pol, err := c.deployPolicy(ctx, req.Namespace, req.Name, bd.Manifest.Invokers, bd.Signer)
	if err != nil {
		return nil, err
	}
	fc := certs.Function{
		PolicyVersion: pol.version,
		Namespace:     req.Namespace,
		Name:          req.Name,
		Version:       v,
		CodeHash:      bd.CodeHash,
		SnapshotHash:  ins.SnapshotHash,
		ABI:           bd.Manifest.ABI,
		BundleHash:    bundleHash,
		OwnerKey:      bd.Signer,
		HPKEKey:       seal.PublicKeyBytes(fk),
		Suite:         seal.DefaultSuite,
		Confidential:  bd.Manifest.Confidential,
		AllowTEE:      bd.Manifest.TEE.Allow,
		MinTCB:        bd.Manifest.TEE.MinTCB,
		IssuedAt:      c.now().UTC(),
	}
	signed, err := certs.Sign(c.identity, certs.DomainFunction, fc)
	if err != nil {
		return nil, err
	}
	rec := &registry.Record{Certificate: signed, Manifest: bd.RawManifest, Object: req.Object, Size: len(raw), Created: fc.IssuedAt}
	rec.Policy, rec.PolicyVersion = pol.install, pol.version
	// The last moment to give up: past the deadline the caller may have
	// been told the deploy failed, and removed the bundle.
	if !time.Now().Before(deadline) {
		return nil, apierr.New(apierr.Timeout, "the deploy took longer than its %s timeout; nothing was registered", timeout)
	}
	if err := c.reg.Put(context.WithoutCancel(ctx), req.Namespace, req.Name, v, rec); err != nil {
		if errors.Is(err, registry.ErrConflict) {
			return nil, apierr.Wrap(apierr.Conflict, err)
		}
		return nil, err
	}
	c.log.Info("registered function", "namespace", req.Namespace, "name", req.Name, "version", v, "code_sha256", bd.CodeHash, "snapshot_sha256", ins.SnapshotHash, "inspected_by", ins.WorkerID)
	if b, err := json.Marshal(wire.Deployed{Namespace: req.Namespace, Name: req.Name, Version: v}); err == nil && c.nc != nil {
		_ = c.nc.Publish(bus.SubjectDeployed, b) // a hint: workers also load on first use
	}
	return wire.FunctionInfo{
		Namespace: req.Namespace, Name: req.Name, Version: v, CodeHash: bd.CodeHash, BundleHash: fc.BundleHash,
		Confidential: fc.Confidential, Created: fc.IssuedAt, Manifest: bd.RawManifest, Certificate: signed, Policy: pol.inForce,
	}, nil
}

// readBundle reads a stored bundle, trying again on a transient failure of
// the store until ctx ends.
func (c *Coordinator) readBundle(ctx context.Context, obj string) ([]byte, error) {
	for attempt := 1; ; attempt++ {
		raw, err := c.bundles.GetBytes(ctx, obj)
		switch {
		case err == nil:
			return raw, nil
		case errors.Is(err, jetstream.ErrObjectNotFound) && attempt >= 4:
			return nil, apierr.New(apierr.NotFound, "bundle object %q not found", obj)
		case errors.Is(err, jetstream.ErrObjectNotFound):
			// Its info was found just before: the read reached a replica
			// that has not caught up yet (bus.ObjectInfo). Ask again.
		case ctx.Err() != nil:
			return nil, apierr.New(apierr.Timeout, "reading the bundle did not finish within the deploy timeout; nothing was registered")
		}
		c.log.Warn("reading bundle failed; trying again", "object", obj, "attempt", attempt, "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(attempt) * 200 * time.Millisecond):
		}
	}
}

// bundleError maps bundle errors at deploy to API errors. A module hash
// mismatch here is the uploader's mistake: invalid_bundle.
func bundleError(err error) error {
	switch {
	case errors.Is(err, bundle.ErrSignature):
		return apierr.Wrap(apierr.BundleSignature, err)
	case errors.Is(err, bundle.ErrManifest):
		return apierr.Wrap(apierr.InvalidManifest, err)
	default:
		return apierr.Wrap(apierr.InvalidBundle, err)
	}
}

// maxClockSkew bounds the age of a worker's signed key request.
const maxClockSkew = 2 * time.Minute

// KeyRequestMessage is what a worker signs to ask for a function key
// (wire.KeyRequestMessage, which owns the format).
func KeyRequestMessage(req wire.FunctionKeyRequest) []byte { return wire.KeyRequestMessage(req) }

// KeyReleaseInfo is the HPKE info under which a function key is sealed to
// a worker (wire.KeyReleaseInfo, which owns the format).
func KeyReleaseInfo(workerID, ns, name string, version int) []byte {
	return wire.KeyReleaseInfo(workerID, ns, name, version)
}

func (c *Coordinator) handleFunctionKey(ctx context.Context, b []byte) (any, error) {
	var req wire.FunctionKeyRequest
	if err := json.Unmarshal(b, &req); err != nil {
		return nil, apierr.New(apierr.BadRequest, "malformed key request")
	}
	w, err := certs.OpenWorker(req.Certificate, c.IdentityKey())
	if err != nil {
		return nil, apierr.Wrap(apierr.Forbidden, err)
	}
	now := c.now()
	if err := w.ValidAt(now); err != nil {
		return nil, apierr.Wrap(apierr.Forbidden, err)
	}
	if err := c.stillAdmitted(w, req.Certificate); err != nil {
		return nil, err
	}
	if !ed25519.Verify(w.SigningKey, KeyRequestMessage(req), req.Signature) {
		return nil, apierr.New(apierr.Forbidden, "key request signature does not verify")
	}
	if d := now.Sub(req.Time); d > maxClockSkew || d < -maxClockSkew {
		return nil, apierr.New(apierr.Forbidden, "key request time is outside the allowed skew")
	}
	rec, err := c.reg.Get(ctx, req.Namespace, req.Name, req.Version)
	if err != nil {
		return nil, apierr.Wrap(apierr.NotFound, err)
	}
	fc, err := certs.OpenFunction(rec.Certificate, c.IdentityKey())
	if err != nil || fc.Namespace != req.Namespace || fc.Name != req.Name || fc.Version != req.Version {
		return nil, apierr.New(apierr.BundleIntegrity, "registry record for %s/%s v%d is not one this coordinator certified", req.Namespace, req.Name, req.Version)
	}
	if err := fc.Admits(w); err != nil {
		return nil, apierr.Wrap(apierr.TEEPolicy, err)
	}
	// The certificate names the key-exchange key by its hash; the request,
	// which the worker signed, carries the key.
	if err := w.CheckKeyExchange(req.KeyExchange); err != nil {
		return nil, apierr.Wrap(apierr.Forbidden, err)
	}
	fk, err := seal.DeriveFunctionKey(c.master, fc.Suite, fc.Namespace, fc.Name, fc.Version, fc.CodeHash)
	if err != nil {
		return nil, err
	}
	kb, err := fk.Bytes()
	if err != nil {
		return nil, err
	}
	defer clear(kb)
	enc, ct, err := seal.SealTo(req.KeyExchange, KeyReleaseInfo(w.WorkerID, fc.Namespace, fc.Name, fc.Version), kb)
	if err != nil {
		return nil, apierr.New(apierr.Forbidden, "sealing key to worker: %v", err)
	}
	resp := wire.FunctionKeyResponse{Enc: enc, Sealed: ct}
	if resp.StateEnc, resp.StateSealed, err = c.sealStateKey(w, req.KeyExchange, fc); err != nil {
		return nil, apierr.New(apierr.Forbidden, "sealing state key to worker: %v", err)
	}
	c.log.Info("released function key", "worker", w.WorkerID, "namespace", fc.Namespace, "name", fc.Name, "version", fc.Version)
	return resp, nil
}

// stillAdmitted checks that a worker certificate is good under the current
// manifest: issued under it, or issued under an earlier one and not revoked
// by a change since (the worker re-admits when it hears of the change).
func (c *Coordinator) stillAdmitted(w *certs.Worker, s certs.Signed) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	h := seal.SHA256Hex(s.Body)
	if c.revoked[w.WorkerID] == h {
		return apierr.New(apierr.Forbidden, "worker %s was revoked by a manifest change", w.WorkerID)
	}
	if w.ManifestHash == hex.EncodeToString(c.mhash[:]) {
		return nil
	}
	if a, ok := c.workers[w.WorkerID]; ok && a.certHash == h {
		return nil
	}
	return apierr.New(apierr.Forbidden, "worker was admitted under another manifest")
}
