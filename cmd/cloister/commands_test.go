package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/cloister-faas/cloister/client"
)

// path is c's command line without the program name.
func path(c *cobra.Command) []string {
	return strings.Fields(strings.TrimPrefix(c.CommandPath(), "cloister"))
}

func TestHelpOfEveryCommand(t *testing.T) {
	cmds := allCommandsOf(newRootCmd(io.Discard, io.Discard))
	if len(cmds) < 60 {
		t.Fatalf("the tree has %d commands; want every command of the CLI", len(cmds))
	}
	for _, c := range cmds {
		for _, flag := range []string{"--help", "-h"} {
			args := append(path(c), flag)
			var out, errb bytes.Buffer
			if err := runWith(context.Background(), args, &out, &errb); err != nil {
				t.Errorf("cloister %s: %v, want exit 0", strings.Join(args, " "), err)
				continue
			}
			help := out.String()
			desc := c.Short // help shows the long description if there is one
			if c.Long != "" {
				desc, _, _ = strings.Cut(c.Long, "\n")
			}
			for _, want := range []string{"Usage:\n  " + c.CommandPath(), "Examples:\n  ", desc} {
				if c.Short == "" || !strings.Contains(help, want) {
					t.Errorf("cloister %s: help has no %q:\n%s", strings.Join(args, " "), want, help)
				}
			}
			if strings.Contains(help, "help requested") || errb.Len() > 0 {
				t.Errorf("cloister %s: stderr %q, help %q", strings.Join(args, " "), errb.String(), help)
			}
		}
	}
}

// TestHelpCommand: `cloister help ...` prints a command's help, as --help does.
func TestHelpCommand(t *testing.T) {
	var out bytes.Buffer
	if err := runWith(context.Background(), []string{"help", "fn", "deploy"}, &out, &out); err != nil || !strings.Contains(out.String(), "cloister fn deploy NAME FILE|DIR") {
		t.Fatalf("help fn deploy: %v %q", err, out.String())
	}
}

// TestUpHelpIsNotGarbled: a back-quoted name in a flag's usage is not
// taken for the flag's value placeholder.
func TestUpHelpIsNotGarbled(t *testing.T) {
	var out bytes.Buffer
	if err := runWith(context.Background(), []string{"up", "--help"}, &out, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "--tee string") {
		t.Errorf("up --help: got %q, want --tee string", out.String())
	}
	for _, c := range allCommandsOf(newRootCmd(io.Discard, io.Discard)) {
		c.Flags().VisitAll(func(f *pflag.Flag) {
			if strings.Contains(f.Usage, "`") {
				t.Errorf("%s --%s: usage %q has a back quote", c.CommandPath(), f.Name, f.Usage)
			}
		})
	}
}

// TestFlagsKept: every command keeps the flags it had (they are a contract).
func TestFlagsKept(t *testing.T) {
	role := []string{"nats", "nats-ca", "nats-nkey", "replicas", "log-level"}
	slots := []string{"memory-budget", "namespace-memory", "namespace-slots", "queue-depth", "queue-wait"}
	async := []string{"activation-ttl", "max-queue-bytes", "max-queue-jobs", "max-queued-per-namespace"}
	want := map[string][]string{
		"up":                  append(append([]string{"addr", "data", "log-level", "max-conns", "max-conns-per-client", "namespace-rate", "nats-listen", "pool-idle", "tee"}, slots...), async...),
		"worker":              append([]string{"collateral-bundle", "concurrency", "data", "id", "log-level", "nats", "nats-ca", "nats-nkey", "policy", "replicas", "tee"}, slots...),
		"coordinator":         append([]string{"collateral-bundle", "data", "gateway-url", "manifest", "policy", "recovery-key", "tee"}, role...),
		"coordinator recover": append([]string{"collateral-bundle", "policy", "recovery-key", "wait"}, role...),
		"gateway":             append(append([]string{"addr", "max-conns", "max-conns-per-client", "namespace-rate"}, role...), async...),
		"nats config":         {"cluster-port", "dir", "hosts", "nodes", "port", "store-dir"},
		"dev cluster":         {"coordinators", "dir", "gateways", "log-level", "nats", "workers"},
		"dev nats":            {"config"},
		"cluster status":      {"json"},
		"collateral bundle":   {"cache", "out"},
		"manifest show":       {"json"},
		"manifest set":        {"json", "key", "pin"},
		"manifest history":    {"json"},
		"keys new":            {"force", "out"},
		"keys recovery":       {"out"},
		"keys api create":     {"expires", "json", "name", "namespace", "platform", "scope"},
		"keys api list":       {"json", "namespace"},
		"keys api revoke":     {},
		"fn deploy":           {"json", "key", "manifest"},
		"fn list":             {"json"},
		"fn get":              {"json", "version"},
		"fn delete":           {},
		"fn policy":           {"invokers", "json", "key"},
		"invoke":              {"async", "data", "idempotency-key", "json", "key", "logs", "plaintext", "receipt-out", "version"},
		"attest":              {"json"},
		"receipt verify":      {"json", "require-inclusion"},
		"ledger verify":       {},
		"ledger audit":        {"by-caller", "csv", "from", "json"},
		"token create":        {"name"},
	}
	for _, sub := range []string{"list", "get", "result", "logs", "dead"} {
		want["activations "+sub] = []string{"json", "limit", "name", "since", "wait"}
	}
	for _, sub := range []string{"create", "list", "get", "delete"} {
		want["seq "+sub] = []string{"json", "key", "unsigned"}
	}
	for _, sub := range []string{"create", "list", "get", "delete", "fire"} {
		want["trigger "+sub] = []string{"cron", "data", "json", "payload", "subject"}
	}
	for _, sub := range []string{"create", "list", "get", "delete", "enable", "disable"} {
		want["rule "+sub] = []string{"disabled", "function", "json", "trigger", "version"}
	}
	root := newRootCmd(io.Discard, io.Discard)
	for p, flags := range want {
		c, rest, err := root.Find(strings.Fields(p))
		if err != nil || len(rest) > 0 || c.CommandPath() != "cloister "+p {
			t.Errorf("cloister %s: not a command (%v)", p, err)
			continue
		}
		var got []string
		c.Flags().VisitAll(func(f *pflag.Flag) {
			if f.Name != "help" {
				got = append(got, f.Name)
			}
		})
		slices.Sort(got)
		slices.Sort(flags)
		if !slices.Equal(got, flags) {
			t.Errorf("cloister %s: flags %v, want %v", p, got, flags)
		}
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"bogus"},
		{"fn"},
		{"fn", "bogus"},
		{"keys", "api"},
		{"fn", "deploy", "x", "--bogus"},
		{"fn", "deploy", "x"},
		{"invoke"},
		{"receipt", "verify"},
		{"version", "extra"},
		{"completion", "tcsh"},
	} {
		var out, errb bytes.Buffer
		err := runWith(context.Background(), args, &out, &errb)
		var ce *codedError
		if !errors.As(err, &ce) || ce.code != exitUsage {
			t.Errorf("cloister %s: %v, want a usage error (exit %d)", strings.Join(args, " "), err, exitUsage)
		}
		if out.Len() > 0 {
			t.Errorf("cloister %s: wrote %q on stdout", strings.Join(args, " "), out.String())
		}
	}
}

func TestVersion(t *testing.T) {
	var out bytes.Buffer
	if err := runWith(context.Background(), []string{"version"}, &out, &out); err != nil || !strings.HasPrefix(out.String(), "cloister ") {
		t.Fatalf("version: %v %q", err, out.String())
	}
	info := func(settings ...string) *debug.BuildInfo {
		bi := &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: "github.com/cloister-faas/cloister", Version: "v1.2.3"}}
		for i := 0; i < len(settings); i += 2 {
			bi.Settings = append(bi.Settings, debug.BuildSetting{Key: settings[i], Value: settings[i+1]})
		}
		return bi
	}
	for _, tc := range []struct {
		name string
		bi   *debug.BuildInfo
		want []string
	}{
		{"clean", info("vcs.revision", "f410968de76b", "vcs.time", "2026-12-07T04:44:12Z", "vcs.modified", "false"),
			[]string{"cloister v1.2.3\n", "commit:  f410968de76b\n", "date:    2026-12-07T04:44:12Z\n", "go:      go1.26.8\n"}},
		{"dirty", info("vcs.revision", "f410968de76b", "vcs.modified", "true"),
			[]string{"commit:  f410968de76b (dirty"}},
		{"no vcs", info(), []string{"commit:  unknown"}},
	} {
		var b bytes.Buffer
		if err := printVersion(&b, tc.bi); err != nil {
			t.Fatal(err)
		}
		for _, w := range tc.want {
			if !strings.Contains(b.String(), w) {
				t.Errorf("%s: got %q, want %q in it", tc.name, b.String(), w)
			}
		}
		if tc.name == "clean" && strings.Contains(b.String(), "dirty") {
			t.Errorf("clean: got %q", b.String())
		}
	}
}

func TestCompletion(t *testing.T) {
	for _, sh := range []string{"bash", "zsh", "fish", "powershell"} {
		var out bytes.Buffer
		if err := runWith(context.Background(), []string{"completion", sh}, &out, &out); err != nil || !strings.Contains(out.String(), "cloister") {
			t.Errorf("completion %s: %v, %d bytes", sh, err, out.Len())
		}
	}
}

func TestNormalizeArgs(t *testing.T) {
	root := newRootCmd(io.Discard, io.Discard)
	for _, tc := range []struct{ in, want string }{
		{"up -addr 127.0.0.1:1 -tee sim", "up --addr 127.0.0.1:1 --tee sim"},
		{"up --addr=127.0.0.1:1 -json", "up --addr=127.0.0.1:1 -json"}, // up has no --json
		{"fn list -json=false", "fn list --json=false"},
		{"fn deploy x f.wasm -json -key k", "fn deploy x f.wasm --json --key k"},
		{"invoke f --data -json", "invoke f --data -json"}, // a flag's value stays
		{"invoke f -data -json -- -key", "invoke f --data -json -- -key"},
		{"keys api ls -json", "keys api ls --json"}, // an alias
		{"coordinator recover -wait 5s", "coordinator recover --wait 5s"},
		{"fn -h", "fn -h"},
	} {
		got := strings.Join(normalizeArgs(root, strings.Fields(tc.in)), " ")
		if got != tc.want {
			t.Errorf("%q: got %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestEndLine(t *testing.T) {
	for _, tc := range []struct{ out, want string }{
		{"", ""},
		{"done\n", ""},
		{`{"greeting":"Hello"}`, "\n"},
	} {
		var b bytes.Buffer
		endLine(&b, []byte(tc.out))
		if b.String() != tc.want {
			t.Errorf("after %q: wrote %q, want %q", tc.out, b.String(), tc.want)
		}
	}
}

func TestErrorText(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{client.ErrNotLogged, "receipt is not in the ledger yet"},
		{&codedError{code: exitVerify, err: client.ErrNotLogged}, "receipt is not in the ledger yet"},
		{fmt.Errorf("%w: bad signature", client.ErrVerification), "verification failed: bad signature"},
		{fmt.Errorf("reading receipt: %w", client.ErrNotLogged), "reading receipt: receipt is not in the ledger yet"},
		{errors.New("no such file"), "no such file"},
	} {
		if got := errorText(tc.err); got != tc.want {
			t.Errorf("got %q, want %q", got, tc.want)
		}
	}
}

func TestExitCodes(t *testing.T) {
	rc := &client.Receipt{}
	for _, tc := range []struct {
		name string
		err  error
		want int
	}{
		{"trap", &client.Error{Code: "function_trap", Receipt: rc}, exitFunction},
		{"js exception", &client.Error{Code: "js_error", Receipt: rc}, exitFunction},
		{"timeout", &client.Error{Code: "timeout", Receipt: rc}, exitFunction},
		{"bad JSON to a script", &client.Error{Code: "bad_request", Receipt: rc}, exitError},
		{"refused, no receipt", &client.Error{Code: "caller_not_authorised"}, exitError},
		{"not found", &client.Error{Code: "not_found"}, exitError},
		{"a step ran and failed", &client.Error{Code: "sequence_step_failed", StepCode: "function_trap", Receipt: rc}, exitFunction},
		{"a step refused its input", &client.Error{Code: "sequence_step_failed", StepCode: "bad_request", Receipt: rc}, exitError},
		{"verification", fmt.Errorf("%w: bad", client.ErrVerification), exitVerify},
	} {
		got := exitError
		var ce *codedError
		if errors.As(classify(tc.err), &ce) {
			got = ce.code
		}
		if got != tc.want {
			t.Errorf("%s: exit %d, want %d", tc.name, got, tc.want)
		}
	}
}

func TestDeployFolder(t *testing.T) {
	write := func(dir string, names ...string) string {
		for _, n := range names {
			if err := os.WriteFile(filepath.Join(dir, n), []byte("x"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return dir
	}
	dir := write(t.TempDir(), "main.js", "manifest.json", "README.md")
	src, m, err := deployFolder(dir)
	if err != nil || src != filepath.Join(dir, "main.js") || m != filepath.Join(dir, "manifest.json") {
		t.Errorf("script and manifest: got %q %q %v", src, m, err)
	}
	dir = write(t.TempDir(), "f.wasm", "main.go")
	if src, m, err = deployFolder(dir); err != nil || src != filepath.Join(dir, "f.wasm") || m != "" {
		t.Errorf("module alone: got %q %q %v", src, m, err)
	}
	for name, files := range map[string][]string{"none": {"README.md"}, "several": {"a.js", "b.py"}} {
		_, _, err := deployFolder(write(t.TempDir(), files...))
		var ce *codedError
		if !errors.As(err, &ce) || ce.code != exitUsage {
			t.Errorf("%s: got %v, want a usage error", name, err)
		}
	}
	if _, _, err := deployFolder(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("missing folder: no error")
	}
}
