package main

import (
	"flag"
	"log/slog"
	"os"
)

// roleFlags are the flags every role that joins an external NATS shares:
// --nats, --replicas and --log-level.
type roleFlags struct {
	nats, logLevel *string
	replicas       *int
}

// addRoleFlags adds the shared flags to fs; replicasHelp says what the
// replica count applies to.
func addRoleFlags(fs *flag.FlagSet, replicasHelp string) roleFlags {
	return roleFlags{
		nats:     fs.String("nats", "nats://127.0.0.1:4222", "NATS server URL, or several comma-separated (the connection fails over between them)"),
		replicas: fs.Int("replicas", 1, replicasHelp),
		logLevel: fs.String("log-level", "info", "debug, info, warn or error"),
	}
}

// parse checks the flags once fs is parsed, and returns the logger and the
// NATS URLs.
func (r roleFlags) parse() (*slog.Logger, string, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*r.logLevel)); err != nil {
		return nil, "", usageErr("--log-level: %v", err)
	}
	urls, err := natsURLs(*r.nats)
	if err != nil {
		return nil, "", err
	}
	if *r.replicas < 1 || *r.replicas > 5 {
		return nil, "", usageErr("--replicas %d: want 1 to 5", *r.replicas)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl})), urls, nil
}
