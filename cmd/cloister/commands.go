package main

import (
	"context"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// runFunc runs a command with its positional arguments, after its flags
// were parsed.
type runFunc func(ctx context.Context, args []string) error

// defineFunc defines a command's flags on fs and returns what runs it.
// The flag values it reads are the ones parsed when runFunc is called.
type defineFunc func(fs *pflag.FlagSet) runFunc

// rootLong is the root command's help: what every client command reads,
// and the exit codes.
const rootLong = `cloister: confidential functions as a service.

Server commands run the platform: every role in one process (up), or each
in its own (coordinator, gateway, worker). Client commands deploy, invoke,
attest and verify.

Client commands read CLOISTER_URL, CLOISTER_TOKEN, CLOISTER_POLICY and
CLOISTER_NAMESPACE, or the file named by CLOISTER_ENV (default
./.cloister/client.env, written by 'up'). CLOISTER_URL may list several
gateways, comma-separated: requests fail over between them where nothing ran
(CLOISTER_DEBUG=1 logs which one answered). CLOISTER_OWNERS (hex Ed25519 keys,
comma-separated) pins the owners whose functions may receive your data.
CLOISTER_KEY names the owner key file for deploys. invoke --async keeps each
activation's result key in CLOISTER_ACTIVATIONS_DIR (default: the user config
dir, cloister/activations).
` + exitCodesHelp

// exitCodesHelp documents the exit codes (see the exit* constants).
const exitCodesHelp = `
Exit codes:
  0  ok
  1  error: see the message (including requests refused before the function ran)
  2  usage: a bad command line
  3  verification failed: attestation, certificate, response or receipt
  4  the function ran and failed: trap, non-zero exit, exception, timeout, limit
`

// groupAnnotation marks a command that only holds others.
const groupAnnotation = "cloister-group"

// newRootCmd builds the command tree, with its help, usage and completion
// scripts written to stdout and stderr.
func newRootCmd(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "cloister",
		Short: "Confidential functions as a service",
		Long:  rootLong,
		Example: `  cloister up                                   # run everything in one process
  cloister keys new                             # create your owner key
  cloister fn deploy hello examples/hello-go    # deploy a folder
  cloister invoke hello --data '{"name":"Ada"}'
  cloister receipt verify receipt.json`,
		Annotations:   map[string]string{groupAnnotation: "1"},
		Args:          cobra.ArbitraryArgs,
		SilenceErrors: true,
		SilenceUsage:  true,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				cmd.SetOut(cmd.ErrOrStderr())
				_ = cmd.Help() // the usage error below is what matters
				return usageErr("no command")
			}
			msg := fmt.Sprintf("unknown command %q", args[0])
			if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
				msg += fmt.Sprintf(" (did you mean %s?)", strings.Join(s, ", "))
			}
			return usageErr("%s: see 'cloister --help'", msg)
		},
	}
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return usageErr("%s: %v (see '%s --help')", strings.TrimPrefix(c.CommandPath(), "cloister "), err, c.CommandPath())
	})
	cobra.AddTemplateFunc("isGroup", func(c *cobra.Command) bool { return c.Annotations[groupAnnotation] != "" })
	root.SetUsageTemplate(strings.Replace(root.UsageTemplate(), "{{if .Runnable}}", "{{if and .Runnable (not (isGroup .))}}", 1))

	root.AddGroup(&cobra.Group{ID: "server", Title: "Run the platform:"}, &cobra.Group{ID: "client", Title: "Use it:"})
	server := []*cobra.Command{
		leaf(cmdUp, "up", "Run every role (NATS, coordinator, gateway, a worker) in one process (sim)",
			`  cloister up
  cloister up --addr 127.0.0.1:9090 --data /tmp/cloister`),
		withSubs(leaf(cmdCoordinator, "coordinator", "Run a coordinator (active, or standby behind the active one) on an external NATS",
			`  cloister coordinator --tee sim --nats nats://127.0.0.1:4222 --gateway-url http://127.0.0.1:8080
  cloister coordinator --tee auto --nats URL --manifest manifest.json --policy policy.json --recovery-key owner.recovery.pub`),
			leaf(cmdCoordinatorRecover, "recover", "Give the secrets to a new coordinator when none survives (owner)",
				`  cloister coordinator recover --nats nats://127.0.0.1:4222 --recovery-key owner.recovery --policy policy.json`)),
		leaf(cmdGateway, "gateway", "Run the gateway (and the trigger runner) as its own process",
			`  cloister gateway --addr 127.0.0.1:8080 --nats nats://127.0.0.1:4222`),
		leaf(cmdWorker, "worker", "Run one worker as its own process on a coordinator's NATS",
			`  cloister worker --tee auto --nats nats://10.0.0.1:4222 --policy policy.json
  cloister worker --tee sim --data /tmp/worker2`),
		group("nats", "Write the configuration of NATS servers",
			leaf(cmdNATS, "config", "Write NATS server configs, TLS certificates and per-role nkeys",
				`  cloister nats config --dir nats --hosts nats1.example,nats2.example,nats3.example --nodes 3`)),
		group("dev", "Run a local cluster for development (sim, loopback)",
			leaf(cmdDevCluster, "cluster", "Run a local cluster (sim), every part a child process on loopback",
				`  cloister dev cluster --dir /tmp/cl --nats 3 --coordinators 2 --gateways 2 --workers 3`),
			leaf(cmdDevNATS, "nats", "Run one NATS server from a config file written by 'cloister nats config'",
				`  cloister dev nats --config nats/nats-1.conf`)),
		group("cluster", "Show the cluster's parts",
			leaf(cmdCluster, "status", "Show the active coordinator, standbys, gateways, workers and NATS (platform key)",
				`  cloister cluster status
  cloister cluster status --json`)),
		group("collateral", "Offline TEE collateral",
			leaf(cmdCollateral, "bundle", "Write an offline collateral bundle from a cache",
				`  cloister collateral bundle --cache .cloister/collateral --out collateral.json`)),
		group("manifest", "The deployment manifest (a change needs an admin signature)",
			leaf(manifestShow, "show", "Show the current deployment manifest",
				`  cloister manifest show
  cloister manifest show --json`),
			leaf(manifestSet, "set FILE.json", "Sign and install a new deployment manifest (admin key)",
				`  cloister manifest set manifest.json --key .cloister/admin.key`),
			leaf(manifestHistory, "history", "List the deployment manifests, oldest first",
				`  cloister manifest history --json`)),
	}
	for _, c := range server {
		c.GroupID = "server"
		root.AddCommand(c)
	}

	client := []*cobra.Command{
		group("keys", "Owner keys, recovery keys and API keys",
			leaf(cmdKeys, "new", "Create an owner signing key",
				`  cloister keys new
  cloister keys new --out alice.key`),
			leaf(cmdKeysRecovery, "recovery", "Create the owner's recovery key (FILE and FILE.pub)",
				`  cloister keys recovery --out owner.recovery`),
			group("api", "The gateway's API keys (admin key)",
				leaf(apiKeyCreate, "create", "Create an API key and print it (admin key)",
					`  cloister keys api create --scope invoke --expires 30d --name ci
  cloister keys api create --scope admin --namespace team-a --json`),
				aliases(leaf(apiKeyList, "list", "List the API keys (never the keys themselves)",
					`  cloister keys api list
  cloister keys api list --namespace team-a --json`), "ls"),
				leaf(apiKeyRevoke, "revoke KEY-OR-ID", "Revoke an API key",
					`  cloister keys api revoke 3f2a9c01`))),
		group("fn", "Deploy and manage functions",
			withLong(leaf(fnDeploy, "deploy NAME FILE|DIR", "Sign, upload and register a function",
				`  cloister fn deploy hello examples/hello-go/hello-go.wasm
  cloister fn deploy hello-js examples/hello-js
  cloister fn deploy hello-py main.py --manifest manifest.json`),
				`Sign, upload and register a function: a WebAssembly module (.wasm), a
JavaScript script (.js) or a Python script (.py), signed with your owner key.

DIR is a folder that holds exactly one .wasm, .js or .py file and, if it
has one, its manifest.json (as the examples/ folders are laid out); --manifest
names another manifest.`),
			aliases(leaf(fnList, "list", "List the functions",
				`  cloister fn list
  cloister fn list --json`), "ls"),
			leaf(fnGet, "get NAME", "Show a function's version",
				`  cloister fn get hello
  cloister fn get hello --version 2 --json`),
			aliases(leaf(fnDelete, "delete NAME", "Delete a function (all its versions)",
				`  cloister fn delete hello`), "rm"),
			leaf(fnPolicy, "policy NAME", "Show or change who may invoke the function",
				`  cloister fn policy hello
  cloister fn policy hello --invokers any
  cloister fn policy hello --invokers owner,3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29`)),
		withLong(leaf(cmdInvoke, "invoke NAME", "Invoke a function or a sequence, sealed to the attested platform",
			`  cloister invoke hello --data '{"name":"Ada"}'
  cloister invoke hello --data @input.json --receipt-out receipt.json
  echo '{}' | cloister invoke hello --data @-
  cloister invoke hello --async --idempotency-key order-42`),
			`Invoke a function or a sequence. The input is sealed to the attested
platform (unless --plaintext); the output goes to stdout as the function
wrote it, and a one-line verification summary to stderr.
`+exitCodesHelp),
		group("activations", "Asynchronous invocations and their results",
			leaf(sub(cmdActivations, "list"), "list", "List recent activations",
				`  cloister activations list --limit 10 --name hello`, "json", "limit", "name"),
			leaf(sub(cmdActivations, "get"), "get ID", "Show an activation's record (unverified)",
				`  cloister activations get 0123456789abcdef0123456789abcdef`, "json"),
			leaf(sub(cmdActivations, "result"), "result ID", "Verify an activation's receipt and open its result",
				`  cloister activations result 0123456789abcdef0123456789abcdef --wait 30s`, "json", "wait"),
			leaf(sub(cmdActivations, "logs"), "logs ID", "Show an activation's logs",
				`  cloister activations logs 0123456789abcdef0123456789abcdef`),
			leaf(sub(cmdActivations, "dead"), "dead", "List the dead letters: queued invocations that were given up",
				`  cloister activations dead --since 24h`, "json", "limit", "since")),
		group("seq", "Sequences: functions chained, each step's output the next one's input",
			leaf(sub(cmdSeq, "create"), "create NAME STEP[@VERSION]...", "Create or replace a sequence",
				`  cloister seq create pipeline parse@2 enrich store
  cloister seq create pipeline parse enrich --unsigned`, "json", "key", "unsigned"),
			leaf(sub(cmdSeq, "list"), "list", "List the sequences", `  cloister seq list --json`, "json"),
			leaf(sub(cmdSeq, "get"), "get NAME", "Show a sequence", `  cloister seq get pipeline`, "json"),
			leaf(sub(cmdSeq, "delete"), "delete NAME", "Delete a sequence", `  cloister seq delete pipeline`, "json")),
		group("trigger", "Triggers: cron schedules and NATS subjects that fire rules",
			leaf(sub(cmdTrigger, "create"), "create NAME", "Create or replace a trigger",
				`  cloister trigger create nightly --cron '0 3 * * *'
  cloister trigger create orders --subject orders.created`, "json", "cron", "subject", "payload"),
			leaf(sub(cmdTrigger, "list"), "list", "List the triggers", `  cloister trigger list`, "json"),
			leaf(sub(cmdTrigger, "get"), "get NAME", "Show a trigger", `  cloister trigger get nightly`, "json"),
			leaf(sub(cmdTrigger, "delete"), "delete NAME", "Delete a trigger", `  cloister trigger delete nightly`, "json"),
			leaf(sub(cmdTrigger, "fire"), "fire NAME", "Fire a trigger now, with an event",
				`  cloister trigger fire orders --data '{"id":42}'`, "json", "data")),
		group("rule", "Rules: which function a trigger invokes",
			leaf(sub(cmdRule, "create"), "create NAME", "Create or replace a rule",
				`  cloister rule create nightly-report --trigger nightly --function report`, "json", "trigger", "function", "version", "disabled"),
			leaf(sub(cmdRule, "list"), "list", "List the rules", `  cloister rule list`, "json"),
			leaf(sub(cmdRule, "get"), "get NAME", "Show a rule", `  cloister rule get nightly-report`, "json"),
			leaf(sub(cmdRule, "delete"), "delete NAME", "Delete a rule", `  cloister rule delete nightly-report`, "json"),
			leaf(sub(cmdRule, "enable"), "enable NAME", "Enable a rule", `  cloister rule enable nightly-report`, "json"),
			leaf(sub(cmdRule, "disable"), "disable NAME", "Disable a rule", `  cloister rule disable nightly-report`, "json")),
		withLong(leaf(cmdConsole, "console", "Run the web console on this machine (it verifies what it shows)",
			`  cloister console
  cloister console --addr 127.0.0.1:0 --key alice.key`), consoleLong),
		leaf(cmdAttest, "attest", "Verify and show the coordinator's attestation",
			`  cloister attest
  cloister attest --json`),
		group("receipt", "Receipts of invocations",
			leaf(cmdReceipt, "verify FILE", "Verify a saved receipt (or receipt chain) and its inclusion in the ledger",
				`  cloister invoke hello --receipt-out receipt.json
  cloister receipt verify receipt.json --require-inclusion`)),
		group("ledger", "The transparency log of receipts",
			leaf(ledgerVerify, "verify", "Check that the log extends the checkpoint seen before",
				`  cloister ledger verify`),
			leaf(ledgerAudit, "audit", "Replay the log, verify every receipt and print the bill",
				`  cloister ledger audit
  cloister ledger audit --by-caller --csv > bill.csv`)),
		group("token", "Deploy-scope API keys (see 'keys api create')",
			leaf(cmdToken, "create NAMESPACE", "Create a deploy-scope API key (admin)",
				`  cloister token create team-a --name ci`)),
		newVersionCmd(),
	}
	for _, c := range client {
		c.GroupID = "client"
		root.AddCommand(c)
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.InitDefaultHelpCmd()
	root.InitDefaultCompletionCmd()
	for _, c := range root.Commands() {
		switch c.Name() {
		case "help":
			c.Example = "  cloister help fn deploy"
		case "completion":
			c.RunE = groupRun
			c.Annotations = map[string]string{groupAnnotation: "1"}
			c.Example = "  source <(cloister completion bash)\n  cloister completion zsh > \"${fpath[1]}/_cloister\""
			for _, sh := range c.Commands() {
				sh.Example = completionExamples[sh.Name()]
			}
		}
	}
	// cobra's own checks of positional arguments (version, completion)
	// are usage errors.
	for _, c := range allCommandsOf(root) {
		if check := c.Args; check != nil {
			c.Args = func(cmd *cobra.Command, args []string) error {
				if err := check(cmd, args); err != nil {
					return usageErr("%s: %v (see '%s --help')", strings.TrimPrefix(cmd.CommandPath(), "cloister "), err, cmd.CommandPath())
				}
				return nil
			}
		}
	}
	return root
}

// allCommandsOf is c and every command under it.
func allCommandsOf(c *cobra.Command) []*cobra.Command {
	l := []*cobra.Command{c}
	for _, s := range c.Commands() {
		l = append(l, allCommandsOf(s)...)
	}
	return l
}

// completionExamples are the examples of `cloister completion SHELL`.
var completionExamples = map[string]string{
	"bash":       "  source <(cloister completion bash)\n  cloister completion bash > /etc/bash_completion.d/cloister",
	"zsh":        "  cloister completion zsh > \"${fpath[1]}/_cloister\"",
	"fish":       "  cloister completion fish > ~/.config/fish/completions/cloister.fish",
	"powershell": "  cloister completion powershell | Out-String | Invoke-Expression",
}

// leaf is a command that runs: define declares its flags, and use, short
// and example are its help. Naming flags in only shows only those in its
// help: the others define shares with sibling commands are still accepted,
// as before, but do nothing.
func leaf(define defineFunc, use, short, example string, only ...string) *cobra.Command {
	c := &cobra.Command{Use: use, Short: short, Example: example}
	run := define(c.Flags())
	if len(only) > 0 {
		c.Flags().VisitAll(func(f *pflag.Flag) {
			if !slices.Contains(only, f.Name) {
				f.Hidden = true
			}
		})
	}
	c.RunE = func(cmd *cobra.Command, args []string) error { return run(cmd.Context(), args) }
	return c
}

// sub binds a shared definition to one of its subcommands.
func sub(f func(sub string, fs *pflag.FlagSet) runFunc, name string) defineFunc {
	return func(fs *pflag.FlagSet) runFunc { return f(name, fs) }
}

// group is a command that holds others. Without one, or with an unknown
// one, it prints its help on stderr and exits with the usage code.
func group(use, short string, subs ...*cobra.Command) *cobra.Command {
	c := &cobra.Command{
		Use:         use + " COMMAND",
		Short:       short,
		Annotations: map[string]string{groupAnnotation: "1"},
		Args:        cobra.ArbitraryArgs,
	}
	c.RunE = groupRun
	c.Example = "  " + strings.Join(exampleLines(subs), "\n  ")
	return withSubs(c, subs...)
}

// groupRun runs a group: it holds other commands and does nothing itself.
func groupRun(cmd *cobra.Command, args []string) error {
	var names []string
	for _, s := range cmd.Commands() {
		if s.IsAvailableCommand() {
			names = append(names, s.Name())
		}
	}
	if len(args) == 0 {
		cmd.SetOut(cmd.ErrOrStderr())
		_ = cmd.Help() // the usage error below is what matters
		return usageErr("%s: missing command (%s)", strings.TrimPrefix(cmd.CommandPath(), "cloister "), strings.Join(names, ", "))
	}
	return usageErr("unknown %s command %q (%s)", strings.TrimPrefix(cmd.CommandPath(), "cloister "), args[0], strings.Join(names, ", "))
}

// exampleLines are the first example of each command in subs.
func exampleLines(subs []*cobra.Command) []string {
	var l []string
	for _, s := range subs {
		first, _, _ := strings.Cut(s.Example, "\n")
		if first = strings.TrimSpace(first); first != "" {
			l = append(l, first)
		}
	}
	return l
}

func withSubs(c *cobra.Command, subs ...*cobra.Command) *cobra.Command {
	c.AddCommand(subs...)
	return c
}

func withLong(c *cobra.Command, long string) *cobra.Command {
	c.Long = long
	return c
}

func aliases(c *cobra.Command, a ...string) *cobra.Command {
	c.Aliases = a
	return c
}

// singleDashFlag matches a long flag written with one dash (-addr, -json=false),
// as Go's flag package accepted them.
var singleDashFlag = regexp.MustCompile(`^-([A-Za-z][A-Za-z0-9-]+)(=.*)?$`)

// normalizeArgs rewrites long flags written with one dash (-addr) to two
// (--addr), for the command they are given to: the CLI once parsed them
// with Go's flag package, which took both. Values of flags are left alone.
func normalizeArgs(root *cobra.Command, args []string) []string {
	out := make([]string, 0, len(args))
	cur := root
	takesValue := false // the previous argument was a flag that takes one
	for i, a := range args {
		if a == "--" {
			return append(out, args[i:]...)
		}
		if takesValue {
			takesValue = false
			out = append(out, a)
			continue
		}
		if m := singleDashFlag.FindStringSubmatch(a); m != nil && cur.Flags().Lookup(m[1]) != nil {
			a = "-" + a
		}
		switch {
		case strings.HasPrefix(a, "--"):
			name, _, hasValue := strings.Cut(a[2:], "=")
			if f := cur.Flags().Lookup(name); f != nil && !hasValue && f.NoOptDefVal == "" {
				takesValue = true
			}
		case !strings.HasPrefix(a, "-"):
			for _, s := range cur.Commands() {
				if s.Name() == a || s.HasAlias(a) {
					cur = s
					break
				}
			}
		}
		out = append(out, a)
	}
	return out
}

// endLine ends the line that output, written on stdout, left open: it
// writes a newline on w (stderr) unless output is empty or ends with one,
// so that what follows on stderr (the verification summary, the function's
// logs) starts its own line where the two meet (a terminal, 2>&1).
// stdout's bytes stay the function's.
func endLine(w io.Writer, output []byte) {
	if len(output) > 0 && output[len(output)-1] != '\n' {
		fmt.Fprintln(w)
	}
}
