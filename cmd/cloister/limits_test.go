package main

import (
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/cloister-faas/cloister/internal/bus"
)

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"1": 1, "512B": 512, "64KiB": 64 << 10, "512MiB": 512 << 20, "8GiB": 8 << 30, "2G": 2 << 30, " 1TiB ": 1 << 40} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "0", "-1GiB", "1.5GiB", "GiB", "8gb", "8 XB", "99999999999999999999", "9999999999TiB"} {
		if got, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) = %d, want an error", in, got)
		}
	}
}

func TestAsyncFlags(t *testing.T) {
	parse := func(args ...string) (bus.AsyncLimits, error) {
		fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
		read := asyncFlags(fs)
		if err := fs.Parse(args); err != nil {
			return bus.AsyncLimits{}, err
		}
		return read()
	}
	l, err := parse()
	if err != nil || l != (bus.AsyncLimits{ActivationTTL: bus.DefaultActivationTTL, MaxQueuedPerNamespace: bus.DefaultMaxQueuedPerNamespace,
		MaxQueueJobs: bus.DefaultMaxQueueJobs, MaxQueueBytes: bus.DefaultMaxQueueBytes}) {
		t.Fatalf("defaults: %+v, %v", l, err)
	}
	l, err = parse("--activation-ttl", "90m", "--max-queued-per-namespace", "-1", "--max-queue-jobs", "20", "--max-queue-bytes", "1GiB")
	if err != nil || l.ActivationTTL != 90*time.Minute || l.MaxQueuedPerNamespace != -1 || l.MaxQueueJobs != 20 || l.MaxQueueBytes != 1<<30 {
		t.Fatalf("set: %+v, %v", l, err)
	}
	for _, bad := range [][]string{
		{"--activation-ttl", "30s"}, {"--activation-ttl", "-1h"}, {"--max-queue-jobs", "0"}, {"--max-queued-per-namespace", "0"},
		{"--max-queue-bytes", "8MiB"}, {"--max-queue-bytes", "lots"},
	} {
		if l, err := parse(bad...); err == nil {
			t.Errorf("%q: %+v, want a usage error", bad, l)
		}
	}
}
