// Command cloister is the Cloister binary: every role, in one process
// (cloister up) or each in its own (coordinator, gateway, worker), and the
// command-line client (deploy, invoke, attest, verify).
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

// Exit codes. Scripts may rely on them.
const (
	exitOK       = 0
	exitError    = 1 // something failed: see the message
	exitUsage    = 2 // bad command line
	exitVerify   = 3 // attestation, certificate, response or receipt did not verify
	exitFunction = 4 // the function ran and failed (trap, timeout, limit, non-zero exit)
)

// exitError carries an exit code through run.
type codedError struct {
	code int
	err  error
}

func (e *codedError) Error() string { return e.err.Error() }
func (e *codedError) Unwrap() error { return e.err }

func usageErr(format string, a ...any) error {
	return &codedError{code: exitUsage, err: fmt.Errorf(format, a...)}
}

const usage = `cloister: confidential functions as a service

Usage:
  cloister up [--data DIR] [--addr HOST:PORT] [--tee sim] [--nats-listen HOST:PORT] [--log-level L] [--pool-idle D]
                                                             run every role in one process
  cloister coordinator [--tee auto|sim|sev-snp|tdx] --nats URL[,URL...] [--nats-ca F --nats-nkey F] [--data DIR] [--manifest F] [--policy F] [--gateway-url URL] [--recovery-key F.pub]
                                                             run a coordinator (active, or standby behind the active one) on an external NATS
  cloister coordinator recover --nats URL --recovery-key F --policy F [--nats-ca F --nats-nkey F] [--wait D]
                                                             give the secrets to a new coordinator when none survives (owner)
  cloister gateway [--addr HOST:PORT] --nats URL[,URL...] [--nats-ca F --nats-nkey F]
                                                             run the gateway (and the trigger runner) as its own process
  cloister worker [--tee auto|sim|sev-snp|tdx] [--nats URL] [--nats-ca F --nats-nkey F] [--policy F] [--data DIR] [--id ID] [--collateral-bundle F]
                                                             run one worker as its own process on a coordinator's NATS
  cloister nats config --dir DIR [--hosts H1,H2] [--nodes N] [--port P] [--cluster-port P]
                                                             write NATS server configs, TLS certificates and per-role nkeys
  cloister dev cluster --dir DIR [--nats N] [--coordinators N] [--gateways N] [--workers N]
                                                             run a local cluster (sim), every part a child process on loopback
  cloister cluster status [--json]                           the active coordinator, standbys, gateways, workers, NATS (platform key)
  cloister collateral bundle [--cache DIR] --out FILE        write an offline collateral bundle from a cache
  cloister manifest show | set FILE.json [--key F] | history [--json]
                                                             the deployment manifest (a change needs an admin signature)
  cloister keys new [--out FILE] [--force]                   create an owner signing key
  cloister keys recovery --out FILE                          create the owner's recovery key (FILE and FILE.pub)
  cloister keys api create --scope invoke|deploy|admin [--expires D] [--name N] [--namespace NS] [--platform] [--json]
                                                             create an API key and print it (admin key)
  cloister keys api list [--namespace NS] [--json] | revoke KEY-OR-ID
                                                             list the API keys (never the keys) or revoke one (admin key)
  cloister fn deploy NAME FILE.wasm|FILE.js|FILE.py [--manifest F] [--key F] [--json]
                                                             sign, upload and register a function
  cloister fn list [--json] | get NAME [--version V] [--json] | delete NAME
  cloister fn policy NAME [--invokers owner|any|HEXKEY,...] [--key F] [--json]
                                                             show or change who may invoke the function
  cloister invoke NAME [--data JSON|@file] [--version V] [--plaintext] [--key F] [--json] [--receipt-out F]
                [--async [--idempotency-key K]]          NAME may be a function or a sequence
  cloister activations list [--limit N] [--name F] [--json] | get ID | result ID [--wait D] | logs ID | dead [--limit N] [--since T]
  cloister seq create NAME STEP[@V]... [--key F | --unsigned] | list | get NAME | delete NAME
  cloister trigger create NAME [--cron EXPR | --subject SUBJ] [--payload JSON] | list | get | delete | fire NAME [--data D]
  cloister rule create NAME --trigger T --function F [--version V] [--disabled] | list | get | delete | enable | disable
  cloister attest [--json]                                   verify and show the coordinator's attestation
  cloister receipt verify FILE [--json] [--require-inclusion]
                                                             verify a saved receipt and its inclusion in the ledger
  cloister ledger verify                                     check the log extends the checkpoint seen before
  cloister ledger audit [--from N] [--by-caller] [--json|--csv]
                                                             replay the log, verify every receipt, print the bill
  cloister token create NAMESPACE [--name N]                 create a deploy-scope API key (admin; see keys api create)

Client commands read CLOISTER_URL, CLOISTER_TOKEN, CLOISTER_POLICY and
CLOISTER_NAMESPACE, or the file named by CLOISTER_ENV (default
./.cloister/client.env, written by 'up'). CLOISTER_URL may list several
gateways, comma-separated: requests fail over between them where nothing ran
(CLOISTER_DEBUG=1 logs which one answered). CLOISTER_OWNERS (hex Ed25519 keys,
comma-separated) pins the owners whose functions may receive your data.
CLOISTER_KEY names the owner key file for deploys. invoke --async keeps each
activation's result key in CLOISTER_ACTIVATIONS_DIR (default: the user config
dir, cloister/activations).
Exit codes: 0 ok, 1 error, 2 usage, 3 verification failed, 4 function failed.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "cloister:", err)
		var ce *codedError
		if errors.As(err, &ce) {
			os.Exit(ce.code)
		}
		os.Exit(exitError)
	}
}

func run(ctx context.Context, args []string) error {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, usage)
		return usageErr("no command")
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "up":
		return cmdUp(ctx, rest)
	case "worker":
		return cmdWorker(ctx, rest)
	case "coordinator":
		return cmdCoordinator(ctx, rest)
	case "gateway":
		return cmdGateway(ctx, rest)
	case "nats":
		return cmdNATS(ctx, rest)
	case "dev":
		return cmdDev(ctx, rest)
	case "manifest":
		return cmdManifest(ctx, rest)
	case "collateral":
		return cmdCollateral(ctx, rest)
	case "keys":
		return cmdKeys(ctx, rest)
	case "fn":
		return cmdFn(ctx, rest)
	case "invoke":
		return cmdInvoke(ctx, rest)
	case "activations":
		return cmdActivations(ctx, rest)
	case "seq":
		return cmdSeq(ctx, rest)
	case "trigger":
		return cmdTrigger(ctx, rest)
	case "rule":
		return cmdRule(ctx, rest)
	case "attest":
		return cmdAttest(ctx, rest)
	case "receipt":
		return cmdReceipt(ctx, rest)
	case "ledger":
		return cmdLedger(ctx, rest)
	case "token":
		return cmdToken(ctx, rest)
	case "cluster":
		return cmdCluster(ctx, rest)
	case "help", "-h", "--help":
		fmt.Print(usage)
		return nil
	default:
		fmt.Fprint(os.Stderr, usage)
		return usageErr("unknown command %q", cmd)
	}
}
