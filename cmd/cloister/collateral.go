package main

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/spf13/pflag"

	"github.com/cloister-faas/cloister/internal/attest/collateral"
)

// cmdCollateral manages verification collateral: `cloister collateral
// bundle` turns a worker's collateral cache into an offline bundle for
// air-gapped verifiers (--collateral-bundle).
func cmdCollateral(fs *pflag.FlagSet) runFunc {
	cache := fs.String("cache", filepath.Join(".cloister", "collateral"), "collateral cache directory (a worker's DATA/collateral)")
	out := fs.String("out", "", "bundle file to write")
	return func(ctx context.Context, _ []string) error {
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
}
