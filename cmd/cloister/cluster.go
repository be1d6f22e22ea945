package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"

	"github.com/cloister-faas/cloister/client"
	"github.com/cloister-faas/cloister/internal/bus"
)

// cmdCluster runs `cloister cluster status`: the active coordinator and
// its standbys, the gateways, the workers and the NATS nodes (a platform key).
func cmdCluster(fs *pflag.FlagSet) runFunc {
	asJSON := fs.Bool("json", false, "print JSON")
	return func(ctx context.Context, _ []string) error {
		c, err := newClient()
		if err != nil {
			return err
		}
		st, err := c.ClusterStatus(ctx)
		if err != nil {
			return classify(err)
		}
		if *asJSON {
			return printJSON(st)
		}
		if err := printCluster(os.Stdout, st, time.Now()); err != nil {
			return err
		}
		if st.Coordinator == nil {
			return fmt.Errorf("no active coordinator answered: %s", st.CoordinatorError)
		}
		return nil
	}
}

func printCluster(out io.Writer, st *client.ClusterStatus, now time.Time) error {
	ago := func(t time.Time) string { return now.Sub(t).Round(100*time.Millisecond).String() + " ago" }
	// Every row has cells, so the tabwriter buffers them all: Flush, at
	// the end, is the write that can fail.
	tw := tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
	row := func(format string, a ...any) { fmt.Fprintf(tw, format, a...) } // buffered: see above
	row("ROLE\tNAME\tSTATE\tDETAIL\n")
	if c := st.Coordinator; c != nil {
		row("coordinator\t%s\tactive\t%s, since %s, manifest %.12s, workers %d alive of %d admitted\n",
			c.Node, c.TEE, c.ActiveSince.Format(time.RFC3339), c.ManifestHash, c.Alive, c.Admitted)
		for _, p := range c.Standbys {
			row("coordinator\t%s\tstandby\t%s, seen %s\n", p.Node, p.TEE, ago(p.LastSeen))
		}
	} else {
		row("coordinator\t-\tnone active\t%s\n", st.CoordinatorError)
	}
	for _, g := range st.Gateways {
		state := "up"
		if g.Self {
			state = "up (answered)"
		}
		row("gateway\t%s\t%s\t%s\n", g.ID, state, g.URL)
	}
	for _, w := range st.Workers {
		row("worker\t%s\tup\t%s, %d of %d slots free, seen %s\n", w.ID, w.TEE, w.Free, w.Capacity, ago(w.LastSeen))
	}
	for _, r := range st.NATS.Replicas {
		state := "current"
		switch {
		case r.Offline:
			state = "OFFLINE"
		case !r.Current:
			state = "behind"
		case r.ActiveMS > 3*bus.StatusInterval.Milliseconds():
			// The leader has not heard from it: likely down, before
			// JetStream marks it offline.
			state = "silent"
		}
		role := "replica"
		if r.Leader {
			role = "leader"
		}
		row("nats\t%s\t%s\t%s, lag %d, active %dms ago\n", r.Name, state, role, r.Lag, r.ActiveMS)
	}
	if st.NATS.Error != "" {
		row("nats\t-\tunknown\t%s\n", st.NATS.Error)
	}
	row("nats\t(gateway's connection)\tconnected\t%s; known servers %s\n", st.NATS.Connected, strings.Join(st.NATS.Servers, ","))
	return tw.Flush()
}
