package main

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/term"

	"github.com/cloister-faas/cloister/client"
	"github.com/cloister-faas/cloister/internal/node"
)

// clientEnv are the settings every client command needs.
type clientEnv struct {
	URL, Token, Policy, Namespace string
}

// loadEnv reads CLOISTER_* from the environment, filling gaps from the env
// file (CLOISTER_ENV, default ./.cloister/client.env).
func loadEnv() (clientEnv, error) {
	e := clientEnv{URL: os.Getenv("CLOISTER_URL"), Token: os.Getenv("CLOISTER_TOKEN"), Policy: os.Getenv("CLOISTER_POLICY")}
	path := os.Getenv("CLOISTER_ENV")
	explicit := path != ""
	if !explicit {
		path = filepath.Join(".cloister", "client.env")
	}
	if e.URL == "" || e.Token == "" || e.Policy == "" {
		vals, err := node.ReadEnvFile(path)
		if err != nil && (explicit || !errors.Is(err, os.ErrNotExist)) {
			return e, fmt.Errorf("reading %s: %w", path, err)
		}
		for k, dst := range map[string]*string{"CLOISTER_URL": &e.URL, "CLOISTER_TOKEN": &e.Token, "CLOISTER_POLICY": &e.Policy, "CLOISTER_NAMESPACE": &e.Namespace} {
			if *dst == "" {
				*dst = vals[k]
			}
		}
	}
	var missing []string
	for k, v := range map[string]string{"CLOISTER_URL": e.URL, "CLOISTER_TOKEN": e.Token, "CLOISTER_POLICY": e.Policy} {
		if v == "" {
			missing = append(missing, k)
		}
	}
	if len(missing) > 0 {
		return e, fmt.Errorf("%s not set: run `cloister up` and `source .cloister/client.env`, or set CLOISTER_ENV", strings.Join(missing, ", "))
	}
	return e, nil
}

// newClient builds an SDK client from the environment, with the attestation
// cached on disk for the SDK's TTL. CLOISTER_URL may list several gateways,
// comma-separated: the client fails over between them (see client.New).
// With CLOISTER_DEBUG set (not empty, not 0), the client logs on stderr
// which gateway answered each request and why it failed over.
func newClient() (*client.Client, error) { return newClientAs("") }

// newClientAs is newClient signing sealed requests with the caller key
// at keyPath: the key that --key names (it must exist), or else the one
// at CLOISTER_KEY or the owner key's default path (defaultKeyPath), if
// there is one there. Without a key, calls are anonymous: only functions
// whose invoker policy is "any" serve them.
func newClientAs(keyPath string) (*client.Client, error) {
	explicit := keyPath != ""
	if keyPath == "" {
		keyPath = defaultKeyPath()
	}
	var caller ed25519.PrivateKey
	if _, err := os.Stat(keyPath); err == nil || explicit {
		k, err := loadKey(keyPath)
		if err != nil {
			return nil, err
		}
		caller = k
	}
	e, err := loadEnv()
	if err != nil {
		return nil, err
	}
	pol, err := client.LoadPolicy(e.Policy)
	if err != nil {
		return nil, err
	}
	var opts []client.Option
	if d := os.Getenv("CLOISTER_DEBUG"); d != "" && d != "0" {
		opts = append(opts, client.WithLogger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))))
	}
	if dir, err := os.UserCacheDir(); err == nil {
		h := sha256.Sum256([]byte(e.URL + "\x00" + e.Policy))
		d := filepath.Join(dir, "cloister")
		if os.MkdirAll(d, 0o700) == nil {
			opts = append(opts, client.WithAttestationCache(filepath.Join(d, "attestation-"+hex.EncodeToString(h[:8])+".json")))
		}
	}
	if ns := os.Getenv("CLOISTER_NAMESPACE"); ns != "" {
		opts = append(opts, client.WithNamespace(ns))
	} else if e.Namespace != "" {
		opts = append(opts, client.WithNamespace(e.Namespace))
	}
	for _, h := range strings.FieldsFunc(os.Getenv("CLOISTER_OWNERS"), func(r rune) bool { return r == ',' || r == ' ' }) {
		k, err := hex.DecodeString(h)
		if err != nil || len(k) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("CLOISTER_OWNERS: %q is not a hex Ed25519 public key", h)
		}
		opts = append(opts, client.WithOwnerKeys(k))
	}
	if caller != nil {
		opts = append(opts, client.WithCallerKey(caller))
	}
	return client.New(e.URL, e.Token, pol, opts...)
}

// attestedClient builds a client and verifies the coordinator's attestation.
func attestedClient(ctx context.Context) (*client.Client, *client.Attestation, error) {
	c, err := newClient()
	if err != nil {
		return nil, nil, err
	}
	a, err := c.Attest(ctx)
	if err != nil {
		return nil, nil, classify(err)
	}
	return c, a, nil
}

// isTerminal reports whether f is a terminal (for progress output).
func isTerminal(f *os.File) bool { return term.IsTerminal(int(f.Fd())) }

// classify maps an error to an exit code.
func classify(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, client.ErrVerification) {
		return &codedError{code: exitVerify, err: err}
	}
	if functionFailed(err) {
		return &codedError{code: exitFunction, err: err}
	}
	return err
}

// functionCodes are the error codes of a function that ran and failed
// (docs/api.md). Every other code, bad_request among them, is a request
// the platform refused or could not serve: the function's code did not
// fail, and its logs hold nothing about it.
var functionCodes = map[string]bool{
	"function_trap":         true,
	"function_exit":         true,
	"js_error":              true,
	"python_error":          true,
	"timeout":               true,
	"fuel_exhausted":        true,
	"memory_limit":          true,
	"output_too_large":      true,
	"state_quota":           true,
	"state_value_too_large": true,
}

// functionFailed reports whether err says that a function ran and failed
// (exit 4): an error with a receipt (the function ran) and a function's
// code, or a sequence whose failed step ran and failed so.
func functionFailed(err error) bool {
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Receipt == nil {
		return false
	}
	if ce.Code == "sequence_step_failed" {
		return ce.StepCode == "" || functionCodes[ce.StepCode]
	}
	return functionCodes[ce.Code]
}

func short(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return h
}
