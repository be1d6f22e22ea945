package client_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/cloister-faas/cloister/client"
	"github.com/cloister-faas/cloister/internal/bundle"
	"github.com/cloister-faas/cloister/internal/node"
)

// The examples run against an embedded single-process Cloister (what
// `cloister up` starts), with a sim TEE. Against a deployment, the gateway
// URL, the API key and the policy come from the operator (CLOISTER_URL,
// CLOISTER_TOKEN, CLOISTER_POLICY).

// startNode starts a node in a temporary directory and returns it with the
// function that stops it and removes the directory.
func startNode() (*node.Node, func()) {
	dir, err := os.MkdirTemp("", "cloister-example-")
	if err != nil {
		log.Fatal(err)
	}
	n, err := node.Start(context.Background(), node.Options{Dir: dir, Addr: "127.0.0.1:0", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		os.RemoveAll(dir) // best effort: the example fails anyway
		log.Fatal(err)
	}
	return n, func() {
		n.Close()         // the example has printed what it shows
		os.RemoveAll(dir) // best effort: a temporary directory
	}
}

// connect returns a client of the node that signs its requests with the
// caller key owner: a new function's default invoker policy admits its
// owner only (docs/authority.md).
func connect(n *node.Node, owner ed25519.PrivateKey) *client.Client {
	policy, err := client.LoadPolicy(n.PolicyPath) // the policy `cloister up` wrote
	if err != nil {
		log.Fatal(err)
	}
	c, err := client.New(n.URL, n.Token, policy, client.WithCallerKey(owner))
	if err != nil {
		log.Fatal(err)
	}
	return c
}

// echoBundle builds the echo function's bundle, version 1 in the default
// namespace, signed by owner (`cloister fn deploy` does this from a
// manifest file).
func echoBundle(owner ed25519.PrivateKey) []byte {
	module, err := os.ReadFile(filepath.Join("..", "internal", "sandbox", "testdata", "echo.wasm"))
	if err != nil {
		log.Fatal(err)
	}
	m := bundle.DefaultManifest("echo")
	m.Version, m.Namespace = 1, "default"
	b, err := bundle.Build(m, module, owner)
	if err != nil {
		log.Fatal(err)
	}
	return b
}

// deployEcho starts a node, deploys echo and returns a client of its owner.
func deployEcho() (*client.Client, func()) {
	n, stop := startNode()
	_, owner, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		log.Fatal(err)
	}
	c := connect(n, owner)
	if _, err := c.Deploy(context.Background(), "echo", echoBundle(owner)); err != nil {
		log.Fatal(err)
	}
	return c, stop
}

// waitLogged waits until the receipt is in a checkpoint of the ledger: the
// coordinator logs receipts within moments of the invocation.
func waitLogged(ctx context.Context, c *client.Client, s *client.SignedReceipt) {
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		_, _, err := c.VerifyInclusion(ctx, s)
		if err == nil {
			return
		}
		if !errors.Is(err, client.ErrNotLogged) || time.Now().After(deadline) {
			log.Fatal(err)
		}
	}
}

// Attest verifies the coordinator's evidence against the pinned policy.
func ExampleClient_Attest() {
	n, stop := startNode()
	defer stop()
	policy, err := client.LoadPolicy(n.PolicyPath)
	if err != nil {
		log.Fatal(err)
	}
	c, err := client.New(n.URL, n.Token, policy)
	if err != nil {
		log.Fatal(err)
	}

	a, err := c.Attest(context.Background())
	if err != nil {
		log.Fatal(err) // wraps client.ErrVerification when the evidence does not verify
	}
	fmt.Println("TEE:", a.TEE)
	fmt.Println("manifest pinned:", a.ManifestHash == policy.ManifestHash)
	fmt.Println("warning:", a.Warning)
	// Output:
	// TEE: sim
	// manifest pinned: true
	// warning: sim TEE: no hardware protection (development only)
}

// Deploy uploads a bundle that the function's owner signed for the
// namespace.
func ExampleClient_Deploy() {
	n, stop := startNode()
	defer stop()
	_, owner, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		log.Fatal(err)
	}
	c := connect(n, owner)

	fi, err := c.Deploy(context.Background(), "echo", echoBundle(owner))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s/%s v%d, confidential: %s\n", fi.Namespace, fi.Name, fi.Version, fi.Confidential)
	// Output:
	// default/echo v1, confidential: required
}

// Invoke seals the input to the attested worker's function key, and
// returns the output once the receipt verified.
func ExampleClient_Invoke() {
	c, stop := deployEcho()
	defer stop()

	res, err := c.Invoke(context.Background(), "echo", []byte("hello"), client.InvokeOptions{})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s (mode %s)\n", res.Output, res.Mode)
	fmt.Printf("receipt: %s v%d %s, caller named: %v\n", res.Receipt.Function, res.Receipt.FunctionVersion,
		res.Receipt.Status, res.Receipt.Caller == c.CallerHash())
	// Output:
	// hello (mode hpke)
	// receipt: echo v1 ok, caller named: true
}

// A session costs one HPKE exchange; each request in it is sealed with a
// key only the client and the attested workers hold.
func ExampleClient_OpenSession() {
	c, stop := deployEcho()
	defer stop()
	ctx := context.Background()

	s, err := c.OpenSession(ctx, "echo", 0)
	if err != nil {
		log.Fatal(err)
	}
	for _, in := range []string{"one", "two"} {
		res, err := s.Invoke(ctx, []byte(in))
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%s (mode %s)\n", res.Output, res.Mode)
	}
	// Output:
	// one (mode session)
	// two (mode session)
}

// InvokeAsync queues a sealed invocation; the Pending it returns holds the
// only key that opens the result.
func ExampleClient_InvokeAsync() {
	c, stop := deployEcho()
	defer stop()
	ctx := context.Background()

	p, err := c.InvokeAsync(ctx, "echo", []byte("later"), client.AsyncOptions{})
	if err != nil {
		log.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	res, err := c.WaitActivation(wctx, p, 50*time.Millisecond)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s: receipt %s\n", res.Output, res.Receipt.Status)
	// Output:
	// later: receipt ok
}

// A saved receipt verifies later, against the attested coordinator, and
// the ledger proves that it was logged.
func ExampleClient_VerifyReceipt() {
	c, stop := deployEcho()
	defer stop()
	ctx := context.Background()
	res, err := c.Invoke(ctx, "echo", []byte("keep the receipt"), client.InvokeOptions{})
	if err != nil {
		log.Fatal(err)
	}
	saved, err := json.Marshal(res.SignedReceipt) // what `cloister invoke --receipt-out` writes
	if err != nil {
		log.Fatal(err)
	}

	var s client.SignedReceipt
	if err := json.Unmarshal(saved, &s); err != nil {
		log.Fatal(err)
	}
	r, err := c.VerifyReceipt(ctx, &s)
	if err != nil {
		log.Fatal(err) // wraps client.ErrVerification
	}
	fmt.Printf("%s/%s v%d: %s, on a %s worker\n", r.Namespace, r.Function, r.FunctionVersion, r.Status, r.TEE.Kind)
	waitLogged(ctx, c, &s)
	fmt.Println("in the ledger: true")
	// Output:
	// default/echo v1: ok, on a sim worker
	// in the ledger: true
}

// An audit replays the whole ledger against its signed checkpoint and
// checks every entry, here by verifying it as a receipt.
func ExampleLedger_Audit() {
	c, stop := deployEcho()
	defer stop()
	ctx := context.Background()
	var receipts []*client.SignedReceipt
	for _, in := range []string{"a", "b", "c"} {
		res, err := c.Invoke(ctx, "echo", []byte(in), client.InvokeOptions{})
		if err != nil {
			log.Fatal(err)
		}
		receipts = append(receipts, res.SignedReceipt)
	}
	for _, s := range receipts {
		waitLogged(ctx, c, s)
	}

	l, err := c.Ledger(ctx)
	if err != nil {
		log.Fatal(err)
	}
	var verified atomic.Int64
	rep, err := l.Audit(ctx, 0, func(_ uint64, entry []byte) error {
		var s client.SignedReceipt
		if err := json.Unmarshal(entry, &s); err != nil {
			return err
		}
		if _, err := c.VerifyReceipt(ctx, &s); err != nil {
			return err
		}
		verified.Add(1)
		return nil
	}, nil)
	if err != nil {
		log.Fatal(err) // the report's Problems say what was found
	}
	fmt.Printf("%d entries, root matches: %v, receipts verified: %d\n", rep.Entries, rep.RootMatches, verified.Load())
	// Output:
	// 3 entries, root matches: true, receipts verified: 3
}
