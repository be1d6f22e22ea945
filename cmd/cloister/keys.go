package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/pflag"
)

// defaultKeyPath is where the owner key lives unless --key or CLOISTER_KEY says otherwise.
func defaultKeyPath() string {
	if p := os.Getenv("CLOISTER_KEY"); p != "" {
		return p
	}
	dir, err := os.UserConfigDir()
	if err != nil {
		dir = "."
	}
	return filepath.Join(dir, "cloister", "owner.key")
}

const keyHeader = "cloister-owner-key-v1 "

func cmdKeys(fs *pflag.FlagSet) runFunc {
	out := fs.String("out", defaultKeyPath(), "where to write the key")
	force := fs.Bool("force", false, "overwrite an existing key")
	return func(ctx context.Context, _ []string) error {
		if _, err := os.Stat(*out); err == nil && !*force {
			return fmt.Errorf("%s exists; pass --force to replace it (functions signed with it stay deployed)", *out)
		}
		pub, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Dir(*out), 0o700); err != nil {
			return err
		}
		if err := os.WriteFile(*out, []byte(keyHeader+hex.EncodeToString(priv.Seed())+"\n"), 0o600); err != nil {
			return fmt.Errorf("writing key: %w", err)
		}
		fmt.Printf("owner key written to %s\npublic key: %s\n", *out, hex.EncodeToString(pub))
		return nil
	}
}

// loadKey reads an owner key written by `keys new`.
func loadKey(path string) (ed25519.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("no owner key at %s: run `cloister keys new` first", path)
	}
	if err != nil {
		return nil, err
	}
	s, ok := strings.CutPrefix(strings.TrimSpace(string(b)), keyHeader)
	seed, err := hex.DecodeString(s)
	if !ok || err != nil || len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("%s is not a cloister owner key", path)
	}
	return ed25519.NewKeyFromSeed(seed), nil
}
