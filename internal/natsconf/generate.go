package natsconf

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nkeys"

	"github.com/cloister-faas/cloister/internal/bus"
)

// Errors.
var (
	// ErrUnknownRole reports a role natsconf has no permissions for.
	ErrUnknownRole = errors.New("unknown role")
	// ErrOptions reports generation options that cannot be used.
	ErrOptions = errors.New("invalid NATS config options")
	// ErrExists reports an output directory that already holds a
	// deployment's files; nothing is overwritten.
	ErrExists = errors.New("NATS config files already exist")
)

// File names written by Generate, in Options.Dir.
const (
	CAFile         = "ca.pem"
	CAKeyFile      = "ca-key.pem"
	ServerCertFile = "server-cert.pem"
	ServerKeyFile  = "server-key.pem"
)

// SeedFile is the file holding role r's nkey seed: the role's only secret
// on the bus, passed to it with --nats-nkey.
func SeedFile(r Role) string { return string(r) + ".nk" }

// ServerConfigFile is the configuration file of node i (1-based).
func ServerConfigFile(i int) string { return "nats-server-" + strconv.Itoa(i) + ".conf" }

// Default ports.
const (
	DefaultClientPort  = 4222
	DefaultClusterPort = 6222
)

// Options configure Generate.
type Options struct {
	// Dir receives the files. It is created (0700) if missing; it must
	// not already hold a deployment's files.
	Dir string
	// Hosts are the names and addresses the servers are reached at, put in
	// the server certificate's SANs. Default: localhost, 127.0.0.1, ::1.
	Hosts []string
	// Nodes is the number of servers (default 1). With more than one, each
	// node's config routes to the others over TLS with mutual
	// authentication. Node i listens on Hosts[i-1] when there are enough
	// hosts; otherwise every node is on the first host, with its ports
	// offset by i-1.
	Nodes int
	// ClientPort and ClusterPort default to 4222 and 6222.
	ClientPort, ClusterPort int
	// StoreDir is JetStream's directory on each node (default
	// /var/lib/cloister-nats/<node>).
	StoreDir string
	// Rand is the randomness of the nkeys and serial numbers (default
	// crypto/rand; crypto/ecdsa draws its keys from crypto/rand whatever
	// it is given). Now is the clock of the certificates (default
	// time.Now).
	Rand io.Reader
	Now  func() time.Time
}

// Result lists what Generate wrote (absolute paths).
type Result struct {
	CA, ServerCert, ServerKey string
	// Configs are the server configuration files, one per node.
	Configs []string
	// Seeds maps each role to its seed file.
	Seeds map[Role]string
	// Public maps each role to its nkey public key, as in the configs.
	Public map[Role]string
	// ClientURLs are the URLs the roles connect to (tls://host:port).
	ClientURLs []string
}

// Generate writes a deployment's NATS files into o.Dir: a CA (ECDSA P-256)
// and a server certificate for o.Hosts, the config of each node (JetStream,
// TLS required of every client, one nkey user per role with the permissions
// of PermissionsFor), and each role's seed file.
func Generate(o Options) (*Result, error) {
	if o.Dir == "" {
		return nil, fmt.Errorf("%w: no directory", ErrOptions)
	}
	if len(o.Hosts) == 0 {
		o.Hosts = []string{"localhost", "127.0.0.1", "::1"}
	}
	for _, h := range o.Hosts {
		if h == "" || strings.ContainsAny(h, " \t\n\"',:/") && net.ParseIP(h) == nil {
			return nil, fmt.Errorf("%w: host %q", ErrOptions, h)
		}
	}
	if o.Nodes == 0 {
		o.Nodes = 1
	}
	if o.Nodes < 1 || o.Nodes > 32 {
		return nil, fmt.Errorf("%w: %d nodes, want 1 to 32", ErrOptions, o.Nodes)
	}
	if o.ClientPort == 0 {
		o.ClientPort = DefaultClientPort
	}
	if o.ClusterPort == 0 {
		o.ClusterPort = DefaultClusterPort
	}
	for _, p := range []int{o.ClientPort, o.ClusterPort} {
		if p < 1 || p+o.Nodes-1 > 65535 {
			return nil, fmt.Errorf("%w: port %d", ErrOptions, p)
		}
	}
	if o.StoreDir == "" {
		o.StoreDir = "/var/lib/cloister-nats"
	}
	if o.Rand == nil {
		o.Rand = rand.Reader
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	dir, err := filepath.Abs(o.Dir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating %s: %w", dir, err)
	}
	names := []string{CAFile, CAKeyFile, ServerCertFile, ServerKeyFile}
	for _, r := range Roles {
		names = append(names, SeedFile(r))
	}
	for i := 1; i <= o.Nodes; i++ {
		names = append(names, ServerConfigFile(i))
	}
	for _, n := range names {
		if _, err := os.Lstat(filepath.Join(dir, n)); err == nil {
			return nil, fmt.Errorf("%w: %s", ErrExists, filepath.Join(dir, n))
		}
	}

	res := &Result{CA: filepath.Join(dir, CAFile), ServerCert: filepath.Join(dir, ServerCertFile),
		ServerKey: filepath.Join(dir, ServerKeyFile), Seeds: map[Role]string{}, Public: map[Role]string{}}
	if err := writeCerts(dir, o); err != nil {
		return nil, err
	}
	for _, r := range Roles {
		kp, err := nkeys.CreatePairWithRand(nkeys.PrefixByteUser, o.Rand)
		if err != nil {
			return nil, fmt.Errorf("creating the %s nkey: %w", r, err)
		}
		seed, err := kp.Seed()
		if err != nil {
			return nil, err
		}
		pub, err := kp.PublicKey()
		if err != nil {
			return nil, err
		}
		path := filepath.Join(dir, SeedFile(r))
		err = writeFile(path, append(seed, '\n'), 0o600)
		kp.Wipe()
		if err != nil {
			return nil, err
		}
		res.Seeds[r], res.Public[r] = path, pub
	}
	nodes := nodeAddrs(o)
	for i, n := range nodes {
		res.ClientURLs = append(res.ClientURLs, "tls://"+net.JoinHostPort(n.host, strconv.Itoa(n.client)))
		conf, err := serverConfig(o, i, nodes, res)
		if err != nil {
			return nil, err
		}
		path := filepath.Join(dir, ServerConfigFile(i+1))
		if err := writeFile(path, []byte(conf), 0o600); err != nil {
			return nil, err
		}
		res.Configs = append(res.Configs, path)
	}
	return res, nil
}

type node struct {
	host            string
	client, cluster int
}

func nodeAddrs(o Options) []node {
	var out []node
	for i := range o.Nodes {
		if o.Nodes <= len(o.Hosts) {
			out = append(out, node{o.Hosts[i], o.ClientPort, o.ClusterPort})
		} else {
			out = append(out, node{o.Hosts[0], o.ClientPort + i, o.ClusterPort + i})
		}
	}
	return out
}

// writeCerts writes a self-signed CA and a server certificate signed by it,
// valid for o.Hosts, for server and client authentication (routes between
// nodes authenticate each other with it).
func writeCerts(dir string, o Options) error {
	now := o.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), o.Rand)
	if err != nil {
		return fmt.Errorf("creating the CA key: %w", err)
	}
	serial := func() (*big.Int, error) {
		return rand.Int(o.Rand, new(big.Int).Lsh(big.NewInt(1), 127))
	}
	caSerial, err := serial()
	if err != nil {
		return err
	}
	caTmpl := &x509.Certificate{
		SerialNumber: caSerial, Subject: pkix.Name{CommonName: "Cloister NATS CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(10, 0, 0),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, BasicConstraintsValid: true, IsCA: true, MaxPathLenZero: true,
	}
	caDER, err := x509.CreateCertificate(o.Rand, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return fmt.Errorf("creating the CA certificate: %w", err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return err
	}
	srvKey, err := ecdsa.GenerateKey(elliptic.P256(), o.Rand)
	if err != nil {
		return fmt.Errorf("creating the server key: %w", err)
	}
	srvSerial, err := serial()
	if err != nil {
		return err
	}
	srvTmpl := &x509.Certificate{
		SerialNumber: srvSerial, Subject: pkix.Name{CommonName: "cloister-nats"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(2, 0, 0),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	for _, h := range o.Hosts {
		if ip := net.ParseIP(h); ip != nil {
			srvTmpl.IPAddresses = append(srvTmpl.IPAddresses, ip)
		} else {
			srvTmpl.DNSNames = append(srvTmpl.DNSNames, h)
		}
	}
	srvDER, err := x509.CreateCertificate(o.Rand, srvTmpl, ca, &srvKey.PublicKey, caKey)
	if err != nil {
		return fmt.Errorf("creating the server certificate: %w", err)
	}
	keyPEM := func(k *ecdsa.PrivateKey) ([]byte, error) {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			return nil, err
		}
		return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
	}
	caKeyPEM, err := keyPEM(caKey)
	if err != nil {
		return err
	}
	srvKeyPEM, err := keyPEM(srvKey)
	if err != nil {
		return err
	}
	for _, f := range []struct {
		name string
		b    []byte
		mode os.FileMode
	}{
		{CAFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o644},
		{CAKeyFile, caKeyPEM, 0o600},
		{ServerCertFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srvDER}), 0o644},
		{ServerKeyFile, srvKeyPEM, 0o600},
	} {
		if err := writeFile(filepath.Join(dir, f.name), f.b, f.mode); err != nil {
			return err
		}
	}
	return nil
}

// serverConfig renders node i's configuration in the nats-server format.
func serverConfig(o Options, i int, nodes []node, res *Result) (string, error) {
	n := nodes[i]
	var b strings.Builder
	fmt.Fprintf(&b, "# Cloister NATS server, node %d of %d. Generated by `cloister nats config`.\n", i+1, len(nodes))
	fmt.Fprintf(&b, "# Permissions: docs/operations.md; decision: docs/adr/0006-nats-permissions.md.\n")
	fmt.Fprintf(&b, "server_name: %q\n", "cloister-"+strconv.Itoa(i+1))
	fmt.Fprintf(&b, "listen: %q\n", net.JoinHostPort(listenHost(n.host), strconv.Itoa(n.client)))
	fmt.Fprintf(&b, "max_payload: %d\n", bus.MaxPayload)
	fmt.Fprintf(&b, "max_pending: %d\n", bus.MaxPending)
	fmt.Fprintf(&b, "jetstream {\n  store_dir: %q\n}\n", filepath.Join(o.StoreDir, "cloister-"+strconv.Itoa(i+1)))
	fmt.Fprintf(&b, "# Every client must use TLS; a plaintext client is refused.\n")
	fmt.Fprintf(&b, "tls {\n  cert_file: %q\n  key_file: %q\n  timeout: 5\n}\n", res.ServerCert, res.ServerKey)
	b.WriteString("authorization {\n  users: [\n")
	for _, r := range Roles {
		p, err := PermissionsFor(r)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "    # %s\n    {\n      nkey: %q\n      permissions: {\n", r, res.Public[r])
		writeList(&b, "publish", p.Publish)
		writeList(&b, "subscribe", p.Subscribe)
		if p.AllowResponses {
			b.WriteString("        allow_responses: true\n")
		}
		b.WriteString("      }\n    }\n")
	}
	b.WriteString("  ]\n}\n")
	if len(nodes) > 1 {
		fmt.Fprintf(&b, "cluster {\n  name: \"cloister\"\n  listen: %q\n", net.JoinHostPort(listenHost(n.host), strconv.Itoa(n.cluster)))
		fmt.Fprintf(&b, "  # Routes authenticate each other with certificates of this CA.\n")
		fmt.Fprintf(&b, "  tls {\n    cert_file: %q\n    key_file: %q\n    ca_file: %q\n    verify: true\n    timeout: 5\n  }\n", res.ServerCert, res.ServerKey, res.CA)
		b.WriteString("  routes: [\n")
		for j, m := range nodes {
			if j != i {
				fmt.Fprintf(&b, "    %q\n", "tls://"+net.JoinHostPort(m.host, strconv.Itoa(m.cluster)))
			}
		}
		b.WriteString("  ]\n}\n")
	}
	return b.String(), nil
}

// listenHost is the address a node listens on: its own address when it is
// a loopback or literal address, every interface otherwise.
func listenHost(h string) string {
	if ip := net.ParseIP(h); ip != nil {
		return h
	}
	if h == "localhost" {
		return "127.0.0.1"
	}
	return "0.0.0.0"
}

func writeList(b *strings.Builder, name string, subjects []string) {
	fmt.Fprintf(b, "        %s: {\n          allow: [\n", name)
	for _, s := range subjects {
		fmt.Fprintf(b, "            %q\n", s)
	}
	b.WriteString("          ]\n        }\n")
}

// writeFile creates path with mode, refusing to replace a file.
func writeFile(path string, b []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if _, err := f.Write(b); err != nil {
		_ = f.Close() // the write's error is the one to return
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
