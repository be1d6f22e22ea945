package main

import (
	"context"
	"flag"
	"fmt"
	"path/filepath"

	"github.com/cloister-faas/cloister/internal/attest/collateral"
)

// cmdCollateral manages verification collateral: `cloister collateral
// bundle` turns a worker's collateral cache into an offline bundle for
// air-gapped verifiers (--collateral-bundle).
func cmdCollateral(_ context.Context, args []string) error {
	if len(args) == 0 || args[0] != "bundle" {
		return usageErr("usage: cloister collateral bundle [--cache DIR] --out FILE")
	}
	fs := flag.NewFlagSet("collateral bundle", flag.ContinueOnError)
	cache := fs.String("cache", filepath.Join(".cloister", "collateral"), "collateral cache directory (a worker's DATA/collateral)")
	out := fs.String("out", "", "bundle file to write")
	if _, err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	if *out == "" {
		return usageErr("--out FILE is required")
	}
	rs, err := collateral.ReadCache(*cache)
	if err != nil {
		return err
	}
	if len(rs) == 0 {
		return fmt.Errorf("%s holds no collateral: run a worker or client against the network first", *cache)
	}
	if err := collateral.WriteBundle(*out, rs); err != nil {
		return err
	}
	fmt.Printf("wrote %d collateral documents to %s\n", len(rs), *out)
	return nil
}
