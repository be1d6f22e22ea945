// Command cloister is the Cloister binary: every role, in one process
// (cloister up) or each in its own (coordinator, gateway, worker), and the
// command-line client (deploy, invoke, attest, verify).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
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

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "cloister:", errorText(err))
		var ce *codedError
		if errors.As(err, &ce) {
			os.Exit(ce.code)
		}
		os.Exit(exitError)
	}
}

// run runs the command line args (without the program name).
func run(ctx context.Context, args []string) error {
	return runWith(ctx, args, os.Stdout, os.Stderr)
}

// runWith is run with the help and the usage written to stdout and stderr.
// (Commands print their results on os.Stdout.)
func runWith(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	root := newRootCmd(stdout, stderr)
	root.SetArgs(normalizeArgs(root, args))
	return root.ExecuteContext(ctx)
}

// errorText is err's message without the "cloister: " that main prints
// before it: errors of the client package start with their own.
func errorText(err error) string {
	msg := err.Error()
	for strings.HasPrefix(msg, "cloister: ") {
		msg = strings.TrimPrefix(msg, "cloister: ")
	}
	return strings.ReplaceAll(msg, ": cloister: ", ": ")
}
