// Package bus owns Cloister's use of NATS: the embedded server, the subject
// names every role agrees on, and the JetStream key-value buckets and object
// store. NATS is untrusted transport and storage: nothing that travels or
// rests here may be plaintext of a confidential payload or a secret key.
package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	neturl "net/url"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Subjects. Workers subscribe to Invoke in the queue group WorkerQueue.
const (
	SubjectInvoke      = "cloister.invoke"
	WorkerQueue        = "workers"
	SubjectAttestation = "cloister.coord.attestation"
	SubjectAdmit       = "cloister.coord.admit"
	SubjectRegister    = "cloister.coord.register"
	SubjectFunctionKey = "cloister.coord.fnkey"
	// SubjectPolicy carries an owner's signed invoker policy update
	// (wire.PolicyRequest) to the coordinator, which certifies it.
	SubjectPolicy    = "cloister.coord.policy"
	CoordinatorQueue = "coordinators"
	// SubjectDeployed announces a registered function version
	// (wire.Deployed) so that workers can load it and pre-warm its pool
	// before the first request.
	SubjectDeployed = "cloister.events.deployed"
	// SubjectDeleted announces a deleted function (wire.Deleted) so that
	// workers free its pools and compiled code at once.
	SubjectDeleted = "cloister.events.deleted"
	// SubjectLedgerAppend carries a batch of signed receipts from a worker
	// to the coordinator, which verifies it and appends it to the ledger
	// (binary, see wire.LedgerAppendRequest; ServeBytes/CallBytes).
	SubjectLedgerAppend = "cloister.coord.ledger.append"
	// SubjectLedgerLookup asks the coordinator for the log index of a
	// receipt by the sha256 of its entry (32 bytes; the answer is 8).
	SubjectLedgerLookup = "cloister.coord.ledger.lookup"
	// SubjectLedgerRead asks the coordinator for one public file of the
	// ledger in the tlog-tiles layout: the request is its path ("checkpoint",
	// "tile/<L>/<N>[.p/<W>]" or "tile/entries/<N>[.p/<W>]"), the answer its
	// bytes (ServeBytes/CallBytes). Gateways serve the ledger through it, so
	// that they share no disk with the coordinator.
	SubjectLedgerRead = "cloister.coord.ledger.read"
	// SubjectStateAnchor carries sealed batches of state operations from
	// a worker to the coordinator's state anchor (internal/state).
	SubjectStateAnchor = "cloister.coord.state"
	// SubjectManifestSet carries a signed manifest change (wire.SignedManifest).
	SubjectManifestSet = "cloister.coord.manifest.set"
	// SubjectManifestHistory answers every manifest since the first.
	SubjectManifestHistory = "cloister.coord.manifest.history"
	// SubjectManifestChanged announces an accepted change (wire.ManifestChange);
	// workers re-admit under the new manifest.
	SubjectManifestChanged = "cloister.events.manifest"
	// SubjectResultToken answers an attestation-result token (wire.ResultToken).
	SubjectResultToken = "cloister.coord.token"
	// SubjectWorkerStatus carries workers' advertisements (wire.WorkerStatus):
	// certified TEE kind and TCB, free capacity and warm functions.
	SubjectWorkerStatus = "cloister.workers.status"
	// SubjectWorkersPing asks every worker to advertise now (a gateway that
	// just started sends it).
	SubjectWorkersPing = "cloister.workers.ping"
	// SubjectInvokeWorker prefixes each worker's own invoke subject, which
	// TEE-aware routing uses to pick the worker.
	SubjectInvokeWorker = "cloister.invoke.w."
)

// SubjectWorkerInspect carries the coordinator's deploy-time inspection
// requests (wire.InspectRequest → wire.InspectReply) to the admitted
// workers, in the queue group WorkerQueue: a worker compiles the bundle
// and runs its initialisation, so that the coordinator runs no guest code.
const SubjectWorkerInspect = "cloister.worker.inspect"

// WorkerSubject is the invoke subject of one worker. An empty request on it
// is a probe (ServeCalls): the worker answers at once whether it is running
// the call the probe names, and NATS answers "no responders" when the
// worker is gone (the gateway probes during a call).
func WorkerSubject(workerID string) string { return SubjectInvokeWorker + workerID }

// Buckets.
const (
	BucketRegistry = "cloister_registry"
	BucketAuth     = "cloister_auth"
	BucketBundles  = "cloister_bundles"
	// BucketState holds functions' sealed state values (internal/state).
	// It keeps StateHistory revisions per key (JetStream's maximum), so
	// that writes stored but never committed (a compare-and-set the anchor
	// refused, a writer that crashed) do not push the committed one out.
	BucketState = "cloister_state"
	// StateHistory is how many revisions of a state key the bucket keeps:
	// at most 64 KB per 1 KB key, for keys written that often.
	StateHistory = 64
)

// ReplayWindow is how long a request nonce is remembered; requests older than
// half of it are refused as stale.
const ReplayWindow = 10 * time.Minute

// MaxPayload is the largest NATS message the embedded server accepts.
const MaxPayload = 16 << 20

// MaxPending is how many bytes the embedded server buffers for a client
// that reads slower than they arrive, before it cuts the client off as a
// slow consumer (nats-server's default is 64 MB). A worker that loads
// several large bundles at once from the object store, on a machine busy
// compiling them, passed 64 MB, was cut off and reconnected two seconds
// later, and the replies sent to it in between were lost: a deploy then
// found no worker to inspect it, and a call waited out its timeout.
const MaxPending = 512 << 20

// Server is an embedded NATS server with JetStream on disk.
type Server struct {
	ns *server.Server
}

// ServerOptions configure the embedded server.
type ServerOptions struct {
	// Dir holds JetStream's file store.
	Dir string
	// Listen is a host:port for other processes to connect to; "" means
	// in-process connections only.
	Listen string
}

// StartServer starts an embedded NATS server and waits until it is ready.
func StartServer(o ServerOptions) (*Server, error) {
	opts := &server.Options{
		ServerName: "cloister",
		JetStream:  true,
		StoreDir:   filepath.Join(o.Dir, "jetstream"),
		MaxPayload: MaxPayload,
		MaxPending: MaxPending,
		NoSigs:     true,
		NoLog:      true,
	}
	if o.Listen == "" {
		opts.DontListen = true
	} else {
		host, port, err := net.SplitHostPort(o.Listen)
		if err != nil {
			return nil, fmt.Errorf("parsing NATS listen address: %w", err)
		}
		p, err := strconv.Atoi(port)
		if err != nil {
			return nil, fmt.Errorf("parsing NATS port: %w", err)
		}
		opts.Host, opts.Port = host, p
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("creating NATS server: %w", err)
	}
	ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		return nil, errors.New("NATS server did not become ready")
	}
	return &Server{ns: ns}, nil
}

// Connect opens an in-process client connection.
func (s *Server) Connect(name string) (*nats.Conn, error) {
	return nats.Connect("", nats.InProcessServer(s.ns), nats.Name(name), nats.MaxReconnects(-1), errorHandler)
}

// ClientURL is the URL other processes use, or "" if the server does not listen.
func (s *Server) ClientURL() string {
	if s.ns.Addr() == nil {
		return ""
	}
	return s.ns.ClientURL()
}

// errorHandler reports asynchronous NATS errors through slog instead of
// nats.go's default, which prints to stderr.
var errorHandler = nats.ErrorHandler(func(nc *nats.Conn, sub *nats.Subscription, err error) {
	subject := ""
	if sub != nil {
		subject = sub.Subject
	}
	slog.Warn("NATS asynchronous error", "connection", nc.Opts.Name, "subject", subject, "err", err)
})

// Shutdown stops the server and waits for it, flushing JetStream to disk.
func (s *Server) Shutdown() {
	s.ns.Shutdown()
	s.ns.WaitForShutdown()
}

// DialOption secures a connection Dial opens.
type DialOption func(*dialConfig)

type dialConfig struct {
	caFile, nkeyFile, inboxPrefix string
}

// WithRootCA makes the connection require TLS and trust the server
// certificates issued by the CA in file (PEM). Without it, the connection
// uses TLS only if the server asks, and trusts the system's roots.
func WithRootCA(file string) DialOption { return func(c *dialConfig) { c.caFile = file } }

// WithNkeySeed authenticates the connection with the nkey seed in file
// (mode 0600; see internal/natsconf). The seed is read from the file when
// the connection signs the server's nonce (at each connect and reconnect),
// wiped after use, and never logged.
func WithNkeySeed(file string) DialOption { return func(c *dialConfig) { c.nkeyFile = file } }

// WithInboxPrefix sets the prefix of the connection's reply inboxes
// (default "_INBOX"), so that the server can restrict each identity to its
// own (natsconf.InboxPrefix).
func WithInboxPrefix(p string) DialOption { return func(c *dialConfig) { c.inboxPrefix = p } }

// Dial connects to an external NATS server: url is one URL or several,
// comma-separated, between which the connection fails over.
func Dial(url, name string, opts ...DialOption) (*nats.Conn, error) {
	var c dialConfig
	for _, o := range opts {
		o(&c)
	}
	nopts := []nats.Option{nats.Name(name), nats.MaxReconnects(-1), errorHandler}
	if c.caFile != "" {
		nopts = append(nopts, nats.RootCAs(c.caFile))
	}
	if c.nkeyFile != "" {
		o, err := nats.NkeyOptionFromSeed(c.nkeyFile)
		if err != nil {
			return nil, fmt.Errorf("reading the NATS nkey seed: %w", err)
		}
		nopts = append(nopts, o)
	}
	if c.inboxPrefix != "" {
		nopts = append(nopts, nats.CustomInboxPrefix(c.inboxPrefix))
	}
	nc, err := nats.Connect(url, nopts...)
	if err != nil {
		return nil, fmt.Errorf("connecting to NATS at %s: %w", redactURLs(url), err)
	}
	return nc, nil
}

// redactURLs hides any password in a list of NATS URLs.
func redactURLs(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		if u, err := neturl.Parse(strings.TrimSpace(p)); err == nil && u.User != nil {
			parts[i] = u.Redacted()
		}
	}
	return strings.Join(parts, ",")
}

// Stores are the JetStream stores every role uses.
type Stores struct {
	JS       jetstream.JetStream
	Registry jetstream.KeyValue
	Auth     jetstream.KeyValue
	Replay   *Replay
	State    jetstream.KeyValue
	Bundles  jetstream.ObjectStore
	// Replicas is the replica count the stores were opened with; a role
	// opens its own streams with the same.
	Replicas int
}

// OpenStores creates (or opens) the buckets. replicas is 1 for an embedded
// server and 3 for a production cluster.
func OpenStores(ctx context.Context, nc *nats.Conn, replicas int, log *slog.Logger) (*Stores, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("opening JetStream: %w", err)
	}
	if replicas < 1 {
		replicas = 1
	}
	kv := func(name string, ttl time.Duration, history uint8) (jetstream.KeyValue, error) {
		var b jetstream.KeyValue
		err := RetryTransient(ctx, func(ctx context.Context) (err error) {
			b, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
				Bucket: name, Storage: jetstream.FileStorage, Replicas: replicas, TTL: ttl, History: history,
			})
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("opening bucket %s: %w", name, err)
		}
		return b, nil
	}
	s := &Stores{JS: js, Replicas: replicas}
	if s.Registry, err = kv(BucketRegistry, 0, 1); err != nil {
		return nil, err
	}
	if s.Auth, err = kv(BucketAuth, 0, 1); err != nil {
		return nil, err
	}
	if s.Replay, err = openReplay(ctx, js, replicas); err != nil {
		return nil, err
	}
	if err := migrateReplay(ctx, js, log); err != nil {
		return nil, fmt.Errorf("copying the replay bucket's nonces: %w", err)
	}
	if s.State, err = kv(BucketState, 0, StateHistory); err != nil {
		return nil, err
	}
	err = RetryTransient(ctx, func(ctx context.Context) (err error) {
		s.Bundles, err = js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{
			Bucket: BucketBundles, Storage: jetstream.FileStorage, Replicas: replicas,
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("opening object store %s: %w", BucketBundles, err)
	}
	log.Debug("bus stores ready", "replicas", replicas)
	return s, nil
}

// Registry keys.

// FunctionKey is the registry key of one function version.
func FunctionKey(namespace, name string, version int) string {
	return "fn." + namespace + "." + name + ".v" + strconv.Itoa(version)
}

// LatestKey is the registry key holding a function's latest version number.
func LatestKey(namespace, name string) string { return "latest." + namespace + "." + name }

// objectLag is how long ObjectInfo asks again for an object that another
// role stored just before: on a replicated store a direct read may reach a
// replica that has not applied the write yet.
const objectLag = 2 * time.Second

// ObjectInfo returns the info of object name in os, asking again for up to
// objectLag while it is not found (see objectLag). Other errors and ctx's
// end return at once.
func ObjectInfo(ctx context.Context, os jetstream.ObjectStore, name string) (*jetstream.ObjectInfo, error) {
	deadline := time.Now().Add(objectLag)
	for wait := 50 * time.Millisecond; ; wait *= 2 {
		info, err := os.GetInfo(ctx, name)
		if !errors.Is(err, jetstream.ErrObjectNotFound) || time.Now().After(deadline) {
			return info, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(min(wait, time.Until(deadline)+time.Millisecond)):
		}
	}
}

// transientFor is how long RetryTransient tries again: longer than a
// JetStream election or a node catching up after a restart. transientTry
// bounds one try: a JetStream request sent before the cluster has a meta
// leader may get no answer at all, and waiting for it to the end of the
// caller's deadline would leave no time to ask again.
const transientFor = 30 * time.Second

var transientTry = 5 * time.Second

// RetryTransient calls f until it succeeds, fails otherwise than by a
// timeout or a missing responder (JetStream electing a leader, a node
// catching up), or transientFor has passed. Each call gets a context of
// its own, ctx's for at most transientTry. A role that starts while its
// NATS cluster recovers then waits instead of exiting.
func RetryTransient(ctx context.Context, f func(context.Context) error) error {
	deadline := time.Now().Add(transientFor)
	for wait := 250 * time.Millisecond; ; wait = min(2*wait, 2*time.Second) {
		tctx, cancel := context.WithTimeout(ctx, transientTry)
		err := f(tctx)
		cancel()
		transient := errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) || errors.Is(err, nats.ErrNoResponders)
		if err == nil || !transient || ctx.Err() != nil || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
	}
}
