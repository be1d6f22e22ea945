package main

import (
	"log/slog"

	"github.com/spf13/pflag"

	"github.com/cloister-faas/cloister/internal/bus"
	"github.com/cloister-faas/cloister/internal/natsconf"
)

// roleFlags are the flags every role that joins an external NATS shares:
// --nats, --replicas, --log-level and the NATS security flags.
type roleFlags struct {
	nats, logLevel *string
	replicas       *int
	sec            natsSecFlags
}

// natsSecFlags are --nats-ca and --nats-nkey, which every role that joins
// an external NATS takes (see `cloister nats config`). They name files: no
// secret is ever given on the command line.
type natsSecFlags struct {
	ca, nkey *string
}

func addNATSSecFlags(fs *pflag.FlagSet) natsSecFlags {
	return natsSecFlags{
		ca:   fs.String("nats-ca", "", "CA certificate (PEM) of the NATS servers: connect with TLS and trust it (from 'cloister nats config')"),
		nkey: fs.String("nats-nkey", "", "this role's NATS nkey seed file (from 'cloister nats config'); the connection authenticates with it"),
	}
}

// dialOptions are the bus.Dial options of role: TLS, the nkey and, with an
// nkey, the role's own reply-inbox prefix, which its permissions require.
func (s natsSecFlags) dialOptions(role natsconf.Role) []bus.DialOption {
	var out []bus.DialOption
	if *s.ca != "" {
		out = append(out, bus.WithRootCA(*s.ca))
	}
	if *s.nkey != "" {
		out = append(out, bus.WithNkeySeed(*s.nkey), bus.WithInboxPrefix(natsconf.InboxPrefix(role)))
	}
	return out
}

// addRoleFlags adds the shared flags to fs; replicasHelp says what the
// replica count applies to.
func addRoleFlags(fs *pflag.FlagSet, replicasHelp string) roleFlags {
	return roleFlags{
		nats:     fs.String("nats", "nats://127.0.0.1:4222", "NATS server URL, or several comma-separated (the connection fails over between them)"),
		replicas: fs.Int("replicas", 1, replicasHelp),
		logLevel: fs.String("log-level", "info", "debug, info, warn or error"),
		sec:      addNATSSecFlags(fs),
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
	return newLogger(lvl), urls, nil
}
