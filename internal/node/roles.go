package node

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cloister-faas/cloister/internal/attest"
	"github.com/cloister-faas/cloister/internal/bus"
	"github.com/cloister-faas/cloister/internal/coordinator"
	"github.com/cloister-faas/cloister/internal/gateway"
	"github.com/cloister-faas/cloister/internal/tee"
	"github.com/cloister-faas/cloister/internal/tee/sim"
	"github.com/cloister-faas/cloister/internal/trigger"
)

// The parts below build one role each. `cloister up` (Start) composes them
// in one process on an embedded NATS; `cloister coordinator` and
// `cloister gateway` run one each against an external NATS. A part gets its
// own NATS connection and stores and shares nothing else with the others.

// OpenSim opens the sim backend whose root key is in dir (created on first
// use) and returns it with the policy that accepts its evidence: allow sim,
// that root, and the measurement of the running binary. sim has NO hardware
// protection; callers print Banner.
func OpenSim(dir string) (tee.TEE, attest.Policy, error) {
	sb, err := sim.Open(dir)
	if err != nil {
		return nil, attest.Policy{}, fmt.Errorf("opening sim TEE: %w", err)
	}
	return sb, attest.Policy{
		AllowTEE:     []tee.Kind{tee.KindSim},
		SimRoots:     []string{hex.EncodeToString(sb.RootPublicKey())},
		Measurements: []string{hex.EncodeToString(sb.Measurement())},
	}, nil
}

// CoordinatorOptions configure the coordinator role.
type CoordinatorOptions struct {
	// Dir is the data directory (absolute). The coordinator keeps its
	// sealed state and manifest history in Dir/coordinator and the ledger
	// in Dir/ledger; the manifest admin key is Dir/manifest-admin.key
	// (AdminKeyFile) and the client policy is written to Dir/policy.json.
	Dir string
	// TEE is the coordinator's backend.
	TEE tee.TEE
	// Policy holds the reference values that the coordinator's own
	// evidence meets, as clients and workers verify it. Unless Genesis is
	// set, it is also the genesis manifest's worker policy.
	Policy attest.Policy
	// Genesis, if set, is the genesis deployment manifest. If it lists no
	// admin key, the key in Dir/manifest-admin.key is added, as when
	// Genesis is nil.
	Genesis *coordinator.Manifest
	// Manifest, if set, edits the genesis manifest last (tests add
	// reference values for more TEE kinds).
	Manifest func(*coordinator.Manifest)
	// Stores are the coordinator's own JetStream stores, and Conn its NATS
	// connection (a coordinator that joins asks a peer for the secrets
	// on it before it serves).
	Stores *bus.Stores
	Conn   *nats.Conn
	// RecoveryKey, if set, is the owner's recovery public key
	// (coordinator.Config.RecoveryKey).
	RecoveryKey []byte
	// Verifier verifies workers' hardware evidence (nil: the default).
	Verifier *attest.Verifier
	Logger   *slog.Logger
}

// Coordinator is the coordinator role, built but not yet serving.
type Coordinator struct {
	// Coord is the coordinator.
	Coord *coordinator.Coordinator
	// Policy is the client policy: the reference values of the
	// coordinator's evidence pinned to its current manifest hash.
	Policy attest.Policy
	// PolicyPath is where Policy was written (Dir/policy.json).
	PolicyPath string
}

// NewCoordinator builds the coordinator role: it loads or creates the
// manifest admin key, opens the coordinator (sealed state, manifest
// history, ledger and state anchor), and writes
// the client policy file. Close releases what it opened.
func NewCoordinator(ctx context.Context, o CoordinatorOptions) (_ *Coordinator, err error) {
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	if o.TEE == nil || o.Stores == nil || o.Dir == "" {
		return nil, errors.New("node: a coordinator needs a TEE, stores and a data directory")
	}
	adminKey, err := loadOrCreateAdminKey(filepath.Join(o.Dir, AdminKeyFile))
	if err != nil {
		return nil, err
	}
	genesis := coordinator.Manifest{Version: 1, Workers: o.Policy, CertTTL: "1h"}
	if o.Genesis != nil {
		genesis = *o.Genesis
	}
	if len(genesis.AdminKeys) == 0 {
		genesis.AdminKeys = []string{hex.EncodeToString(adminKey.Public().(ed25519.PublicKey))}
	}
	if o.Manifest != nil {
		o.Manifest(&genesis)
	}
	// No sandbox engine: since ADR 0005 admitted workers check and
	// initialise modules at deploy, not the coordinator.
	coord, err := coordinator.New(ctx, coordinator.Config{
		Dir: filepath.Join(o.Dir, "coordinator"), TEE: o.TEE, Stores: o.Stores, Conn: o.Conn, Logger: log,
		// Peers are coordinators whose evidence meets the same reference
		// values as this one's.
		PeerPolicy:  o.Policy,
		RecoveryKey: o.RecoveryKey,
		LedgerDir:   filepath.Join(o.Dir, "ledger"),
		Manifest:    genesis,
		Verifier:    o.Verifier,
	})
	if err != nil {
		return nil, err
	}
	r := &Coordinator{Coord: coord, Policy: o.Policy, PolicyPath: filepath.Join(o.Dir, "policy.json")}
	r.Policy.ManifestHash = coord.ManifestHash()
	if err := writeJSONFile(r.PolicyPath, r.Policy); err != nil {
		_ = r.Close(context.Background()) // the write's error is the one to return
		return nil, fmt.Errorf("writing the client policy: %w", err)
	}
	return r, nil
}

// Serve answers the coordinator's subjects on nc, the ledger's files
// included (bus.SubjectLedgerRead), until ctx ends.
func (r *Coordinator) Serve(ctx context.Context, nc *nats.Conn) error {
	return r.Coord.Serve(ctx, nc)
}

// Close closes the coordinator, flushing the ledger.
func (r *Coordinator) Close(ctx context.Context) error { return r.Coord.Close(ctx) }

// ClientEnv is what the coordinator role writes to Dir/client.env and
// Dir/wskprops for clients: the platform admin API key, kept across
// restarts while it is still valid in the auth bucket, and the gateway's
// URL when known.
type ClientEnv struct {
	EnvPath, WskpropsPath string
	Token                 string
}

// WriteClientEnv issues (or keeps) the platform admin API key (namespace
// "default") in st's auth bucket and writes dir/client.env (URL may be "",
// then CLOISTER_URL is left out) and, if url is set, dir/wskprops. by names
// the writer in the file's comment ("cloister up").
func WriteClientEnv(ctx context.Context, dir, url, policyPath, by string, st *bus.Stores) (ClientEnv, error) {
	var e ClientEnv
	var err error
	if e.EnvPath, e.Token, err = writeClientEnv(ctx, dir, url, policyPath, by, st); err != nil {
		return e, fmt.Errorf("writing client.env: %w", err)
	}
	if url != "" {
		if e.WskpropsPath, err = writeWskprops(dir, url, e.Token, "default"); err != nil {
			return e, err
		}
	}
	return e, nil
}

// GatewayOptions configure the gateway role and the trigger runner that
// runs beside it.
type GatewayOptions struct {
	// Conn and Stores are the gateway's own; TriggerConn and
	// TriggerStores the trigger runner's.
	Conn          *nats.Conn
	Stores        *bus.Stores
	TriggerConn   *nats.Conn
	TriggerStores *bus.Stores
	Logger        *slog.Logger
	Metrics       *prometheus.Registry
	// Ready reports whether the roles behind the gateway are ready (nil:
	// always).
	Ready         func() error
	AsyncLimits   bus.AsyncLimits
	Quotas        gateway.Quotas
	DeployTimeout time.Duration
	// Replicas is the JetStream replica count of the async streams (0: 1).
	Replicas int
}

// Gateway is the gateway role: the HTTP handler and the trigger runner.
type Gateway struct {
	Handler  *gateway.Gateway
	Triggers *trigger.Runner
}

// NewGateway builds the gateway role. It reads the ledger's files from the
// coordinator over NATS, so it needs no disk at all.
func NewGateway(ctx context.Context, o GatewayOptions) (*Gateway, error) {
	replicas := max(o.Replicas, 1)
	gwAsync, err := bus.OpenAsync(ctx, o.Stores.JS, replicas, o.AsyncLimits)
	if err != nil {
		return nil, err
	}
	h := gateway.New(gateway.Config{Conn: o.Conn, Stores: o.Stores, Logger: o.Logger, Metrics: o.Metrics,
		Async: gwAsync, Ready: o.Ready, Quotas: o.Quotas, DeployTimeout: o.DeployTimeout})
	trigAsync, err := bus.OpenAsync(ctx, o.TriggerStores.JS, replicas, o.AsyncLimits)
	if err != nil {
		return nil, err
	}
	return &Gateway{Handler: h, Triggers: trigger.NewRunner(trigger.RunnerConfig{Conn: o.TriggerConn, Async: trigAsync, Logger: o.Logger})}, nil
}

// Listen listens on addr with the HTTP edge's connection limits and returns
// the listener, a server for handler with the edge's timeouts, and the
// base URL ("http://HOST:PORT").
func Listen(addr string, handler http.Handler, edge gateway.EdgeConfig, metrics prometheus.Registerer, log *slog.Logger) (net.Listener, *http.Server, string, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, "", fmt.Errorf("listening on %s: %w", addr, err)
	}
	limited, err := gateway.NewLimitListener(ln, edge, metrics, log)
	if err != nil {
		_ = ln.Close() // the listener's error is the one to return
		return nil, nil, "", err
	}
	return limited, gateway.NewServer(handler, edge, log), "http://" + ln.Addr().String(), nil
}
