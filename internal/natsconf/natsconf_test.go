package natsconf_test

import (
	"bufio"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/cloister-faas/cloister/internal/bus"
	"github.com/cloister-faas/cloister/internal/natsconf"
)

// StartServer loads a generated config, as nats-server -c would, on a
// random port of 127.0.0.1 with JetStream in a temporary directory.
func startServer(t *testing.T, conf string) *server.Server {
	t.Helper()
	opts, err := server.ProcessConfigFile(conf)
	if err != nil {
		t.Fatalf("loading %s: %v", conf, err)
	}
	opts.Host, opts.Port, opts.StoreDir = "127.0.0.1", -1, t.TempDir()
	opts.NoSigs, opts.NoLog = true, true
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		t.Fatal("NATS did not become ready")
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	return ns
}

func generate(t *testing.T, o natsconf.Options) *natsconf.Result {
	t.Helper()
	if o.Dir == "" {
		o.Dir = filepath.Join(t.TempDir(), "nats")
	}
	res, err := natsconf.Generate(o)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// conn is a role's connection with the asynchronous errors the server sent it.
type conn struct {
	*nats.Conn
	mu   sync.Mutex
	errs []error
}

func (c *conn) lastErrs() []error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]error(nil), c.errs...)
}

// dial connects as role, with TLS and the role's seed and inbox prefix.
func dial(t *testing.T, url string, res *natsconf.Result, role natsconf.Role) *conn {
	t.Helper()
	c := &conn{}
	nk, err := nats.NkeyOptionFromSeed(res.Seeds[role])
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(url, nats.Name(string(role)), nats.RootCAs(res.CA), nk, nats.CustomInboxPrefix(natsconf.InboxPrefix(role)),
		nats.Timeout(5*time.Second), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			c.mu.Lock()
			defer c.mu.Unlock()
			c.errs = append(c.errs, err)
		}))
	if err != nil {
		t.Fatalf("connecting as %s: %v", role, err)
	}
	t.Cleanup(nc.Close)
	c.Conn = nc
	return c
}

// denied reports whether the server refused an operation on subject: it
// sends a permissions violation, which arrives asynchronously.
func denied(t *testing.T, c *conn, subject string) bool {
	t.Helper()
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		for _, err := range c.lastErrs() {
			if errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), `"`+subject+`"`) {
				return true
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	return false
}

func TestGenerateFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "nats")
	hosts := []string{"nats.example", "10.0.0.7", "nats3.example"}
	res := generate(t, natsconf.Options{Dir: dir, Hosts: hosts, Nodes: 3})
	if got, want := strings.Join(res.ClientURLs, ","), "tls://nats.example:4222,tls://10.0.0.7:4222,tls://nats3.example:4222"; len(res.Configs) != 3 || got != want {
		t.Fatalf("%d configs, URLs %s, want 3 and %s", len(res.Configs), got, want)
	}
	// Fewer hosts than nodes: the nodes share the first, on their own ports.
	one := generate(t, natsconf.Options{Hosts: []string{"127.0.0.1"}, Nodes: 2})
	if got, want := strings.Join(one.ClientURLs, ","), "tls://127.0.0.1:4222,tls://127.0.0.1:4223"; got != want {
		t.Errorf("one host, two nodes: URLs %s, want %s", got, want)
	}
	for _, f := range []string{natsconf.CAKeyFile, natsconf.ServerKeyFile, natsconf.SeedFile(natsconf.Gateway), natsconf.ServerConfigFile(1)} {
		fi, err := os.Stat(filepath.Join(dir, f))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, mode %v, want 0600", f, err, fi.Mode().Perm())
		}
	}
	// The certificate chains to the CA, for the hosts, with ECDSA P-256.
	caPEM, _ := os.ReadFile(res.CA)
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatal("no CA certificate")
	}
	b, _ := os.ReadFile(res.ServerCert)
	blk, _ := pem.Decode(b)
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hosts {
		if _, err := cert.Verify(x509.VerifyOptions{DNSName: h, Roots: pool}); err != nil {
			t.Errorf("server certificate for %s: %v", h, err)
		}
	}
	if _, err := cert.Verify(x509.VerifyOptions{DNSName: "other.example", Roots: pool}); err == nil {
		t.Error("server certificate verifies for a host it was not made for")
	}
	if cert.PublicKeyAlgorithm != x509.ECDSA {
		t.Errorf("server key: %v, want ECDSA", cert.PublicKeyAlgorithm)
	}
	// Every node's config loads; seeds stay out of it.
	for _, c := range res.Configs {
		opts, err := server.ProcessConfigFile(c)
		if err != nil {
			t.Fatalf("%s: %v", c, err)
		}
		if len(opts.Nkeys) != 3 || opts.TLSConfig == nil || len(opts.Routes) != 2 || opts.Cluster.TLSConfig == nil {
			t.Errorf("%s: %d nkeys, TLS %v, %d routes, route TLS %v", c, len(opts.Nkeys), opts.TLSConfig != nil, len(opts.Routes), opts.Cluster.TLSConfig != nil)
		}
		// Large bundles cross the bus: a worker loading several must not be
		// cut off as a slow consumer at nats-server's default 64 MB.
		if opts.MaxPayload != bus.MaxPayload || opts.MaxPending != bus.MaxPending {
			t.Errorf("%s: max_payload %d, max_pending %d; want %d and %d", c, opts.MaxPayload, opts.MaxPending, bus.MaxPayload, bus.MaxPending)
		}
		text, _ := os.ReadFile(c)
		for _, r := range natsconf.Roles {
			seed, _ := os.ReadFile(res.Seeds[r])
			if strings.Contains(string(text), strings.TrimSpace(string(seed))) {
				t.Errorf("%s holds the %s seed", c, r)
			}
		}
	}
	// Nothing is overwritten.
	if _, err := natsconf.Generate(natsconf.Options{Dir: dir}); !errors.Is(err, natsconf.ErrExists) {
		t.Errorf("generating again into %s: %v, want ErrExists", dir, err)
	}
}

func TestGenerateOptions(t *testing.T) {
	for _, o := range []natsconf.Options{
		{},
		{Dir: t.TempDir(), Nodes: -1},
		{Dir: t.TempDir(), Nodes: 33},
		{Dir: t.TempDir(), Hosts: []string{"bad host"}},
		{Dir: t.TempDir(), Hosts: []string{`x"y`}},
		{Dir: t.TempDir(), ClientPort: -1},
		{Dir: t.TempDir(), ClusterPort: 65535, Nodes: 2},
	} {
		if _, err := natsconf.Generate(o); !errors.Is(err, natsconf.ErrOptions) {
			t.Errorf("Generate(%+v): %v, want ErrOptions", o, err)
		}
	}
	if _, err := natsconf.PermissionsFor("admin"); !errors.Is(err, natsconf.ErrUnknownRole) {
		t.Errorf("PermissionsFor(admin): %v, want ErrUnknownRole", err)
	}
}

// TestPermissions runs a server from a generated config and checks that each
// role can do its part of a request/reply, and cannot act as another role.
func TestPermissions(t *testing.T) {
	res := generate(t, natsconf.Options{Hosts: []string{"127.0.0.1"}})
	ns := startServer(t, res.Configs[0])
	url := ns.ClientURL()
	coord := dial(t, url, res, natsconf.Coordinator)
	gw := dial(t, url, res, natsconf.Gateway)
	wk := dial(t, url, res, natsconf.Worker)

	// Allowed: the coordinator answers a worker's admission request and a
	// gateway's attestation request; a worker answers a gateway's invoke.
	for _, s := range []struct {
		responder *conn
		subject   string
		queue     string
		requester *conn
	}{
		{coord, bus.SubjectAdmit, bus.CoordinatorQueue, wk},
		{coord, bus.SubjectAttestation, bus.CoordinatorQueue, gw},
		{coord, bus.SubjectManifestSet, bus.CoordinatorQueue, gw},
		{wk, bus.SubjectInvoke, bus.WorkerQueue, gw},
		{wk, bus.SubjectWorkerInspect, bus.WorkerQueue, coord},
	} {
		sub, err := s.responder.QueueSubscribe(s.subject, s.queue, func(m *nats.Msg) { _ = m.Respond([]byte("ok")) })
		if err != nil {
			t.Fatal(err)
		}
		if err := s.responder.Flush(); err != nil {
			t.Fatal(err)
		}
		m, err := s.requester.Request(s.subject, []byte("q"), 3*time.Second)
		if err != nil || string(m.Data) != "ok" {
			t.Errorf("request on %s: %v", s.subject, err)
		}
		_ = sub.Unsubscribe()
	}
	// JetStream: each role opens the stores it uses; the gateway queues an
	// async job and a worker takes it from its namespace's consumer.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	log := slog.New(slog.DiscardHandler)
	if _, err := bus.OpenStores(ctx, coord.Conn, 1, log); err != nil {
		t.Fatalf("coordinator opening the stores: %v", err)
	}
	var async = map[natsconf.Role]*bus.AsyncStores{}
	for r, c := range map[natsconf.Role]*conn{natsconf.Gateway: gw, natsconf.Worker: wk} {
		st, err := bus.OpenStores(ctx, c.Conn, 1, log)
		if err != nil {
			t.Fatalf("%s opening the stores: %v", r, err)
		}
		open := func() (*bus.AsyncStores, error) { return bus.OpenAsync(ctx, st.JS, 1, bus.AsyncLimits{}) }
		if r == natsconf.Worker {
			open = func() (*bus.AsyncStores, error) { return bus.BindAsync(ctx, st.JS, 1) }
		}
		if async[r], err = open(); err != nil {
			t.Fatalf("%s opening the async stores: %v", r, err)
		}
		if _, err := st.Registry.Put(ctx, "probe."+string(r), []byte("x")); err != nil {
			t.Errorf("%s writing the registry: %v", r, err)
		}
		if _, err := st.Bundles.PutBytes(ctx, "probe."+string(r), []byte("bundle")); err != nil {
			t.Errorf("%s writing the bundles: %v", r, err)
		}
		if _, err := st.Bundles.GetBytes(ctx, "probe."+string(r)); err != nil {
			t.Errorf("%s reading the bundles: %v", r, err)
		}
	}
	if _, err := async[natsconf.Gateway].JS.Publish(ctx, bus.SubjectAsyncPrefix+"default", []byte("job")); err != nil {
		t.Fatalf("gateway queueing a job: %v", err)
	}
	cons, err := async[natsconf.Worker].JS.CreateOrUpdateConsumer(ctx, bus.StreamAsync, jetstream.ConsumerConfig{
		Durable: bus.AsyncConsumerName(bus.SubjectAsyncPrefix + "default"), FilterSubject: bus.SubjectAsyncPrefix + "default",
		AckPolicy: jetstream.AckExplicitPolicy,
	})
	if err != nil {
		t.Fatalf("worker creating its consumer: %v", err)
	}
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	got := 0
	for m := range batch.Messages() {
		got++
		if err := m.DoubleAck(ctx); err != nil {
			t.Errorf("worker acknowledging a job: %v", err)
		}
	}
	if got != 1 || batch.Error() != nil {
		t.Errorf("worker fetched %d jobs (%v), want 1", got, batch.Error())
	}
	for _, c := range []*conn{coord, gw, wk} {
		if errs := c.lastErrs(); len(errs) != 0 {
			t.Errorf("%s: asynchronous errors %v", c.Opts.Name, errs)
		}
	}

	// Refused. Each case runs on its own connection, so that one
	// violation cannot be mistaken for another.
	for _, c := range []struct {
		role    natsconf.Role
		sub     bool
		subject string
	}{
		// A gateway cannot answer as a worker or as the coordinator...
		{natsconf.Gateway, true, bus.SubjectInvoke},
		{natsconf.Gateway, true, bus.WorkerSubject("w1")},
		{natsconf.Gateway, true, bus.SubjectManifestSet},
		{natsconf.Gateway, true, bus.SubjectAdmit},
		{natsconf.Gateway, true, "cloister.coord.>"},
		{natsconf.Gateway, true, bus.SubjectWorkerInspect},
		// ...nor read other roles' replies...
		{natsconf.Gateway, true, "_INBOX.>"},
		{natsconf.Gateway, true, natsconf.InboxPrefix(natsconf.Worker) + ".>"},
		// ...nor announce a manifest change, ask for admission or a
		// function key, or append to the ledger as a worker.
		{natsconf.Gateway, false, bus.SubjectManifestChanged},
		{natsconf.Gateway, false, bus.SubjectAdmit},
		{natsconf.Gateway, false, bus.SubjectFunctionKey},
		{natsconf.Gateway, false, bus.SubjectLedgerAppend},
		{natsconf.Gateway, false, bus.SubjectDeployed},
		{natsconf.Gateway, false, bus.SubjectWorkerStatus},
		// A worker cannot act as the coordinator.
		{natsconf.Worker, true, "cloister.coord.>"},
		{natsconf.Worker, true, bus.SubjectAdmit},
		{natsconf.Worker, true, bus.SubjectFunctionKey},
		{natsconf.Worker, false, bus.SubjectManifestChanged},
		{natsconf.Worker, false, bus.SubjectDeployed},
		{natsconf.Worker, false, bus.SubjectManifestSet},
		{natsconf.Worker, false, bus.SubjectRegister},
		{natsconf.Worker, true, natsconf.InboxPrefix(natsconf.Coordinator) + ".>"},
		// The coordinator does not serve invocations.
		{natsconf.Coordinator, true, bus.SubjectInvoke},
		{natsconf.Coordinator, false, bus.SubjectInvoke},
		// No role may delete a stream.
		{natsconf.Gateway, false, "$JS.API.STREAM.DELETE.KV_" + bus.BucketRegistry},
		{natsconf.Worker, false, "$JS.API.STREAM.DELETE.KV_" + bus.BucketAuth},
	} {
		name := string(c.role) + " publish " + c.subject
		if c.sub {
			name = string(c.role) + " subscribe " + c.subject
		}
		t.Run(name, func(t *testing.T) {
			nc := dial(t, url, res, c.role)
			if c.sub {
				if _, err := nc.Subscribe(c.subject, func(*nats.Msg) {}); err != nil {
					t.Fatal(err)
				}
			} else if err := nc.Publish(c.subject, []byte("x")); err != nil {
				t.Fatal(err)
			}
			if !denied(t, nc, c.subject) {
				t.Errorf("not refused; errors: %v", nc.lastErrs())
			}
		})
	}
}

// TestRefused checks that the server refuses plaintext clients, clients
// that do not trust its CA, and unknown or missing credentials.
func TestRefused(t *testing.T) {
	res := generate(t, natsconf.Options{Hosts: []string{"127.0.0.1"}})
	ns := startServer(t, res.Configs[0])
	url := ns.ClientURL()
	addr := ns.Addr().String()

	// Plaintext: the server demands TLS before anything else.
	t.Run("plaintext", func(t *testing.T) {
		c, err := net.DialTimeout("tcp", addr, 3*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		r := bufio.NewReader(c)
		info, err := r.ReadString('\n')
		if err != nil || !strings.Contains(info, `"tls_required":true`) {
			t.Fatalf("INFO %q: %v", info, err)
		}
		if _, err := c.Write([]byte("CONNECT {\"verbose\":false}\r\nPING\r\n")); err != nil {
			t.Fatal(err)
		}
		// The server reads the CONNECT as a TLS handshake, fails it and
		// closes the connection: no PONG, and nothing after.
		rest, err := io.ReadAll(r)
		if err != nil && !errors.Is(err, io.EOF) && !strings.Contains(err.Error(), "reset") {
			t.Fatalf("plaintext client: connection not closed: %v (read %q)", err, rest)
		}
		if strings.Contains(string(rest), "PONG") || strings.Contains(string(rest), "+OK") {
			t.Fatalf("plaintext client was served: %q", rest)
		}
	})

	nk := func(role natsconf.Role) nats.Option {
		o, err := nats.NkeyOptionFromSeed(res.Seeds[role])
		if err != nil {
			t.Fatal(err)
		}
		return o
	}
	stranger, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	strangerSeed, _ := stranger.Seed()
	strangerFile := filepath.Join(t.TempDir(), "stranger.nk")
	if err := os.WriteFile(strangerFile, strangerSeed, 0o600); err != nil {
		t.Fatal(err)
	}
	strangerOpt, err := nats.NkeyOptionFromSeed(strangerFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		opts []nats.Option
	}{
		{"TLS without the CA", []nats.Option{nk(natsconf.Worker)}},
		{"no credentials", []nats.Option{nats.RootCAs(res.CA)}},
		{"unknown nkey", []nats.Option{nats.RootCAs(res.CA), strangerOpt}},
		{"user and password", []nats.Option{nats.RootCAs(res.CA), nats.UserInfo("worker", "worker")}},
	} {
		t.Run(c.name, func(t *testing.T) {
			nc, err := nats.Connect(url, append(c.opts, nats.Timeout(5*time.Second), nats.NoReconnect())...)
			if err == nil {
				nc.Close()
				t.Fatal("connected")
			}
		})
	}
	// bus.Dial takes the same files.
	nc, err := bus.Dial(url, "test", bus.WithRootCA(res.CA), bus.WithNkeySeed(res.Seeds[natsconf.Worker]), bus.WithInboxPrefix(natsconf.InboxPrefix(natsconf.Worker)))
	if err != nil {
		t.Fatalf("bus.Dial as a worker: %v", err)
	}
	nc.Close()
	if _, err := bus.Dial(url, "test", bus.WithNkeySeed(filepath.Join(t.TempDir(), "missing.nk"))); err == nil {
		t.Error("bus.Dial with a missing seed file succeeded")
	}
}
