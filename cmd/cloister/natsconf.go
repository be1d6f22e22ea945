package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/pflag"

	"github.com/cloister-faas/cloister/internal/natsconf"
)

// cmdNATS runs `cloister nats config`: it writes a deployment's NATS
// server configs, TLS certificates and per-role nkey seeds.
func cmdNATS(fs *pflag.FlagSet) runFunc {
	dir := fs.String("dir", "", "directory to write the files to (created 0700; must not hold earlier files)")
	hosts := fs.String("hosts", "localhost,127.0.0.1,::1", "comma-separated names and addresses of the NATS servers (the server certificate's SANs)")
	nodes := fs.Int("nodes", 1, "number of NATS servers; with more than one, each config routes to the others over mutual TLS")
	port := fs.Int("port", natsconf.DefaultClientPort, "client port")
	clusterPort := fs.Int("cluster-port", natsconf.DefaultClusterPort, "cluster (route) port")
	storeDir := fs.String("store-dir", "/var/lib/cloister-nats", "JetStream directory on each server (one subdirectory per node)")
	return func(ctx context.Context, pos []string) error {
		if len(pos) != 0 {
			return usageErr("nats config: unexpected argument %q", pos[0])
		}
		if *dir == "" {
			return usageErr("nats config: --dir is required")
		}
		var hs []string
		for _, h := range strings.Split(*hosts, ",") {
			if h = strings.TrimSpace(h); h != "" {
				hs = append(hs, h)
			}
		}
		res, err := natsconf.Generate(natsconf.Options{Dir: *dir, Hosts: hs, Nodes: *nodes,
			ClientPort: *port, ClusterPort: *clusterPort, StoreDir: *storeDir})
		if errors.Is(err, natsconf.ErrOptions) || errors.Is(err, natsconf.ErrExists) {
			return usageErr("nats config: %v", err)
		}
		if err != nil {
			return fmt.Errorf("generating the NATS config: %w", err)
		}
		fmt.Printf("NATS config for %d node(s) written to %s\n", len(res.Configs), *dir)
		for _, c := range res.Configs {
			fmt.Printf("  server:      nats-server -c %s\n", c)
		}
		urls := strings.Join(res.ClientURLs, ",")
		fmt.Printf("  coordinator: cloister coordinator --nats %s --nats-ca %s --nats-nkey %s\n", urls, res.CA, res.Seeds[natsconf.Coordinator])
		fmt.Printf("  gateway:     cloister gateway --nats %s --nats-ca %s --nats-nkey %s\n", urls, res.CA, res.Seeds[natsconf.Gateway])
		fmt.Printf("  worker:      cloister worker --nats %s --nats-ca %s --nats-nkey %s\n", urls, res.CA, res.Seeds[natsconf.Worker])
		fmt.Printf("Copy each seed (*.nk) only to the hosts of its role; keep %s offline.\n", natsconf.CAKeyFile)
		return nil
	}
}
