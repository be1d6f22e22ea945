package main

import (
	"context"
	"log/slog"
	"os"

	"k8s.io/klog/v2"
)

// newLogger returns the text logger of a server command at level lvl, and
// routes the libraries' own logs through it: tessera (the ledger) logs
// with klog, whose informational lines ("Initializing directory for POSIX
// log ...", "Failed to fetch old checkpoint: file does not exist" on a new
// log) are routine, so they come out at debug level, tagged lib=klog;
// klog's errors stay errors.
func newLogger(lvl slog.Level) *slog.Logger {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
	routeLibraryLogs(log)
	return log
}

// routeLibraryLogs sends klog's output to log, demoted (libraryHandler).
func routeLibraryLogs(log *slog.Logger) {
	klog.SetSlogLogger(slog.New(libraryHandler{log.Handler().WithAttrs([]slog.Attr{slog.String("lib", "klog")})}))
}

// libraryHandler demotes a library's informational records to debug.
type libraryHandler struct{ h slog.Handler }

func demote(l slog.Level) slog.Level {
	if l < slog.LevelError {
		return slog.LevelDebug
	}
	return l
}

func (d libraryHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return d.h.Enabled(ctx, demote(l))
}

func (d libraryHandler) Handle(ctx context.Context, r slog.Record) error {
	r.Level = demote(r.Level)
	return d.h.Handle(ctx, r)
}

func (d libraryHandler) WithAttrs(a []slog.Attr) slog.Handler {
	return libraryHandler{d.h.WithAttrs(a)}
}

func (d libraryHandler) WithGroup(name string) slog.Handler {
	return libraryHandler{d.h.WithGroup(name)}
}
