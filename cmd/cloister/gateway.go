package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/pflag"
	"golang.org/x/sync/errgroup"

	"github.com/cloister-faas/cloister/internal/bus"
	"github.com/cloister-faas/cloister/internal/gateway"
	"github.com/cloister-faas/cloister/internal/natsconf"
	"github.com/cloister-faas/cloister/internal/node"
	"github.com/cloister-faas/cloister/internal/wire"
)

// cmdGateway runs the gateway, and the trigger runner beside it, as their
// own process against an external NATS. It is untrusted, needs no TEE and
// no disk: API keys, functions and bundles are in NATS, and the ledger's
// files come from the coordinator over bus.SubjectLedgerRead.
func cmdGateway(fs *pflag.FlagSet) runFunc {
	addr := fs.String("addr", "127.0.0.1:8080", "HTTP listen address")
	rf := addRoleFlags(fs, "JetStream replicas of the buckets and async streams (3 on a cluster)")
	rate := fs.Float64("namespace-rate", gateway.DefaultRate, "requests per second one namespace may make through this gateway (burst: twice as many)")
	maxConns := fs.Int("max-conns", 0, "HTTP connections the gateway keeps open at once (default 4096; negative: no cap)")
	maxConnsPerClient := fs.Int("max-conns-per-client", 0, "HTTP connections from one client address (IPv4, or IPv6 /64) (default 256; negative: no cap, as behind a proxy)")
	asyncLimits := asyncFlags(fs)
	return func(ctx context.Context, _ []string) error {
		log, urls, err := rf.parse()
		if err != nil {
			return err
		}
		async, err := asyncLimits()
		if err != nil {
			return err
		}
		replicas := rf.replicas
		connect := func(name string) (*nats.Conn, *bus.Stores, error) {
			nc, err := bus.Dial(urls, name, rf.sec.dialOptions(natsconf.Gateway)...)
			if err != nil {
				return nil, nil, err
			}
			st, err := bus.OpenStores(ctx, nc, *replicas, log)
			if err != nil {
				nc.Close()
				return nil, nil, err
			}
			return nc, st, nil
		}
		gwNC, gwSt, err := connect("cloister-gateway")
		if err != nil {
			return err
		}
		defer closeConn(gwNC)
		// Triggers run beside the gateway, on a connection of their own.
		trigNC, trigSt, err := connect("cloister-triggers")
		if err != nil {
			return err
		}
		defer closeConn(trigNC)

		metrics := prometheus.NewRegistry()
		metrics.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		gw, err := node.NewGateway(ctx, node.GatewayOptions{Conn: gwNC, Stores: gwSt, TriggerConn: trigNC, TriggerStores: trigSt,
			Logger: log, Metrics: metrics, Ready: coordinatorReady(gwNC), Quotas: gateway.Quotas{Rate: *rate}, Replicas: *replicas, AsyncLimits: async})
		if err != nil {
			return err
		}
		edge := gateway.EdgeConfig{MaxConns: *maxConns, MaxConnsPerClient: *maxConnsPerClient}
		ln, srv, url, err := node.Listen(*addr, gw.Handler, edge, metrics, log)
		if err != nil {
			return err
		}
		gw.Handler.SetURL(url)
		log.Info("gateway serving", "url", url, "nats", gwNC.ConnectedUrlRedacted())
		fmt.Fprintf(os.Stderr, "cloister gateway at %s\n", url)

		g, gctx := errgroup.WithContext(ctx)
		g.Go(func() error { return gw.Triggers.Run(gctx) })
		g.Go(func() error {
			if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		})
		g.Go(func() error {
			<-gctx.Done()
			// Drain the requests in flight, then cut what is still busy.
			sctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			if err := srv.Shutdown(sctx); err != nil {
				_ = srv.Close() // stopping: the cut is all that is left to do
			}
			return nil
		})
		err = g.Wait()
		log.Info("gateway stopped")
		return err
	}
}

// coordinatorReady reports the gateway ready once a coordinator answers on
// the bus and has admitted at least one worker.
func coordinatorReady(nc *nats.Conn) func() error {
	return func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		var a wire.Attestation
		if err := bus.Call(ctx, nc, bus.SubjectAttestation, struct{}{}, &a); err != nil {
			return fmt.Errorf("asking the coordinator: %w", err)
		}
		if len(a.Workers) == 0 {
			return errors.New("the coordinator has admitted no worker yet")
		}
		return nil
	}
}
