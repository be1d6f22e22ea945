package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/cloister-faas/cloister/client"
	"github.com/cloister-faas/cloister/internal/console"
)

// consoleLong is `cloister console`'s help.
const consoleLong = `Run the web console on this machine and print the URL to open.

The console reads client.env as every client command does. The browser
talks only to this process, which verifies the attestation, the
certificates, the receipts and the ledger, and seals every invocation, with
the same client as the CLI: the gateway never serves code to the browser or
sees plaintext. Functions deployed from the browser are signed with your
owner key (--key), which stays in this process.

It listens on loopback unless --addr says otherwise, and answers the API
only with the random token in the URL it prints (docs/console.md).`

func cmdConsole(fs *pflag.FlagSet) runFunc {
	addr := fs.String("addr", "127.0.0.1:8090", "listen address (loopback unless you mean otherwise; port 0: any free port)")
	keyPath := fs.String("key", "", "owner key that signs deploys and invocations (default: CLOISTER_KEY or the owner key's default path, if there)")
	metricsURLs := fs.StringArray("metrics", nil, "a Prometheus endpoint the Metrics page scrapes besides each gateway's /metrics (a cloister worker process's, say), with no credential; repeatable")
	scrape := fs.Duration("scrape-interval", console.DefaultScrapeInterval, "how often the Metrics page's scraper reads the metrics (it keeps the last 180 intervals)")
	return func(ctx context.Context, pos []string) error {
		if len(pos) != 0 {
			return usageErr("usage: cloister console [--addr HOST:PORT] [--key F] [--metrics URL]... [--scrape-interval D]")
		}
		if *scrape < 100*time.Millisecond {
			return usageErr("--scrape-interval %v: want at least 100ms", *scrape)
		}
		for _, u := range *metricsURLs {
			if p, err := url.Parse(u); err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
				return usageErr("--metrics %q: want an http or https URL", u)
			}
		}
		c, err := newClientAs(*keyPath)
		if err != nil {
			return err
		}
		e, err := loadEnv()
		if err != nil {
			return err
		}
		pol, err := client.LoadPolicy(e.Policy)
		if err != nil {
			return err
		}
		kp := *keyPath
		if kp == "" {
			kp = defaultKeyPath()
		}
		cfg := console.Config{Client: c, Policy: pol, Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
			MetricsURLs: *metricsURLs, ScrapeInterval: *scrape}
		if _, err := os.Stat(kp); err == nil {
			if cfg.OwnerKey, err = loadKey(kp); err != nil {
				return err
			}
		} else {
			fmt.Fprintf(os.Stderr, "cloister: no owner key at %s: deploying from the console is off (run `cloister keys new`)\n", kp)
		}
		for _, g := range strings.Split(e.URL, ",") {
			if g = strings.TrimSpace(g); g != "" {
				cfg.Gateways = append(cfg.Gateways, g)
			}
		}
		if cfg.PendingDir, err = pendingDir(); err != nil {
			cfg.PendingDir = "" // keys then live in memory only
		}
		if dir, err := os.UserCacheDir(); err == nil {
			cfg.CheckpointDir = filepath.Join(dir, "cloister")
		}
		if cfg.Token, err = console.NewToken(); err != nil {
			return err
		}
		ln, err := net.Listen("tcp", *addr)
		if err != nil {
			return fmt.Errorf("listening on %s: %w", *addr, err)
		}
		defer ln.Close() // Shutdown closes it first; this covers the early returns
		cfg.AllowedHosts = console.LoopbackHosts(ln.Addr().String())
		if cfg.AllowedHosts == nil {
			fmt.Fprintf(os.Stderr, "cloister: warning: the console listens on %s, not loopback: anyone who can reach it and sees the token can use your keys\n", ln.Addr())
		}
		s, err := console.New(cfg)
		if err != nil {
			return err
		}
		defer s.Close() // after the Shutdown below: stops the metrics scraper
		srv := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
		host, port, _ := net.SplitHostPort(ln.Addr().String()) // a listener's address always splits
		if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
			host = "127.0.0.1"
		}
		fmt.Printf("http://%s/?token=%s\n", net.JoinHostPort(host, port), cfg.Token)
		errc := make(chan error, 1)
		go func() { errc <- srv.Serve(ln) }()
		select {
		case err := <-errc:
			return fmt.Errorf("serving the console: %w", err)
		case <-ctx.Done():
		}
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("stopping the console: %w", err)
		}
		return nil
	}
}
