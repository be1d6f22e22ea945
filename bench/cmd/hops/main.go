// Command hops charges the samples of a CPU profile of BenchmarkInvoke to
// the hops of an invocation, the rows of docs/architecture.md ("Where an
// invocation's time goes"), and prints each row in µs of CPU per call.
//
// It reads the text of `go tool pprof -traces`. Each sample goes to the
// innermost frame that belongs to a hop, except that a sample with
// encoding/json or internal/strictjson anywhere on its stack is a row of
// its own. Crypto, syscalls and allocation are charged to the hop that
// called them; the packages both ends share (internal/seal, receipt, certs
// and wire) to the hop further out that called them. Samples with no hop
// frame (background GC marking, the scheduler) are the runtime row.
//
//	go test -c -o /tmp/bench.test ./bench/
//	cd bench && /tmp/bench.test -test.run '^$' -test.bench '^BenchmarkInvoke$/^(session|native)$' \
//	    -test.benchtime 18000x -test.cpuprofile /tmp/session.prof
//	go tool pprof -traces /tmp/bench.test /tmp/session.prof > /tmp/session.traces
//	go run ./bench/cmd/hops -calls 18033 -base /tmp/native.traces /tmp/session.traces
//
// -base subtracts, row by row, a profile of what is not the mode's own
// work: the native echo alone, for a mode that ran with native after it.
//
// With -table, each argument is NAME=TRACES[,BASE] (several TRACES or BASE
// files joined by "+" are pooled), and the output is one markdown table
// with a column per NAME. `bench/run.sh hops` runs the profiles and prints
// that table.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
)

// rows are the hops, in the order of the table; sub-rows are indented.
var rows = []string{
	"client", "  client: sealing", "  client: receipt verification",
	"http", "gateway", "bus", "worker", "  worker: opening and sealing", "  worker: receipt signing",
	"sandbox", "ledger", "json", "runtime",
}

const mod = "github.com/cloister-faas/cloister/"

// hopOf names the hop a frame belongs to: "" for none, "shared" for the
// packages both ends use.
func hopOf(frame string) string {
	switch {
	case strings.HasPrefix(frame, mod+"client."), strings.HasPrefix(frame, mod+"bench."):
		return "client"
	case strings.HasPrefix(frame, "net/http."):
		return "http"
	case strings.HasPrefix(frame, mod+"internal/gateway."):
		return "gateway"
	case strings.HasPrefix(frame, mod+"internal/bus."), strings.HasPrefix(frame, "github.com/nats-io/"):
		return "bus"
	case strings.HasPrefix(frame, mod+"internal/worker."):
		for _, f := range []string{"runAppenders", "fillBatch", "appendBatch", "logReceipt"} {
			if strings.Contains(frame, f) {
				return "ledger"
			}
		}
		return "worker"
	case strings.HasPrefix(frame, mod+"internal/sandbox."), strings.HasPrefix(frame, mod+"internal/instrument."),
		strings.HasPrefix(frame, "github.com/tetratelabs/wazero"):
		return "sandbox"
	case strings.HasPrefix(frame, mod+"internal/ledger."), strings.HasPrefix(frame, mod+"internal/journal."),
		strings.HasPrefix(frame, mod+"internal/coordinator."), strings.HasPrefix(frame, "github.com/transparency-dev/"):
		return "ledger"
	case strings.HasPrefix(frame, mod+"internal/seal."), strings.HasPrefix(frame, mod+"internal/receipt."),
		strings.HasPrefix(frame, mod+"internal/certs."), strings.HasPrefix(frame, mod+"internal/wire."):
		return "shared"
	}
	return ""
}

// classify returns the rows a stack (innermost frame first) is charged to:
// its hop, and the hop's sub-row when there is one.
func classify(stack []string) []string {
	for _, f := range stack {
		if strings.HasPrefix(f, "encoding/json.") || strings.HasPrefix(f, mod+"internal/strictjson.") {
			return []string{"json"}
		}
	}
	shared := ""
	for _, f := range stack {
		h := hopOf(f)
		switch {
		case h == "":
			continue
		case h == "shared":
			if shared == "" {
				shared = f
			}
			continue
		}
		if sub := subRow(h, shared); sub != "" {
			return []string{h, sub}
		}
		return []string{h}
	}
	if shared != "" {
		return []string{"worker", subRow("worker", shared)}
	}
	return []string{"runtime"}
}

// subRow is the sub-row of hop for a stack whose innermost shared frame is
// shared ("" if none).
func subRow(hop, shared string) string {
	seal := strings.HasPrefix(shared, mod+"internal/seal.")
	rcpt := strings.HasPrefix(shared, mod+"internal/receipt.")
	switch {
	case hop == "client" && seal:
		return "  client: sealing"
	case hop == "client" && rcpt:
		return "  client: receipt verification"
	case hop == "worker" && seal:
		return "  worker: opening and sealing"
	case hop == "worker" && rcpt:
		return "  worker: receipt signing"
	}
	return ""
}

// readTraces sums the samples of `go tool pprof -traces` output by row, in
// seconds.
func readTraces(r io.Reader) (map[string]float64, error) {
	sum := map[string]float64{}
	var weight time.Duration
	var stack []string
	flush := func() {
		if weight > 0 {
			for _, row := range classify(stack) {
				sum[row] += weight.Seconds()
			}
		}
		weight, stack = 0, stack[:0]
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "-----------+") {
			flush()
			continue
		}
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		// A sample starts with its weight ("10ms"), then its innermost frame.
		if d, err := time.ParseDuration(fields[0]); err == nil && len(fields) >= 2 && strings.HasPrefix(line, " ") && weight == 0 && len(stack) == 0 {
			weight = d
			stack = append(stack, fields[1])
			continue
		}
		if weight > 0 {
			stack = append(stack, fields[0])
		}
	}
	flush()
	return sum, sc.Err()
}

func readFile(name string) (map[string]float64, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return readTraces(f)
}

// perCall returns each row of traces (files joined by "+", pooled) minus
// base (likewise; "" for none), in µs per call, and the total of the rows
// that are not sub-rows.
func perCall(traces, base string, calls int) (map[string]float64, float64, error) {
	sum := map[string]float64{}
	add := func(files string, sign float64) error {
		for f := range strings.SplitSeq(files, "+") {
			m, err := readFile(f)
			if err != nil {
				return err
			}
			for row, v := range m {
				sum[row] += sign * v
			}
		}
		return nil
	}
	if err := add(traces, 1); err != nil {
		return nil, 0, err
	}
	if base != "" {
		if err := add(base, -1); err != nil {
			return nil, 0, err
		}
	}
	total := 0.0
	for row, v := range sum {
		sum[row] = v / float64(calls) * 1e6
		if !strings.HasPrefix(row, " ") {
			total += sum[row]
		}
	}
	return sum, total, nil
}

func us(v float64) string { return strconv.FormatFloat(max(v, 0), 'f', 0, 64) }

func main() {
	calls := flag.Int("calls", 0, "the calls each profiled run made (pooled runs: the sum)")
	base := flag.String("base", "", "traces of a profile to subtract, row by row")
	table := flag.Bool("table", false, "print a markdown table of NAME=TRACES[,BASE] arguments")
	flag.Parse()
	if *calls <= 0 || (!*table && flag.NArg() != 1) || (*table && flag.NArg() == 0) {
		fmt.Fprintln(os.Stderr, "usage: hops -calls N [-base TRACES] TRACES\n       hops -calls N -table NAME=TRACES[,BASE] ...")
		os.Exit(2)
	}
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "hops:", err)
		os.Exit(1)
	}
	if !*table {
		sum, total, err := perCall(flag.Arg(0), *base, *calls)
		if err != nil {
			fail(err)
		}
		for _, row := range rows {
			fmt.Printf("%s\t%s\n", row, us(sum[row]))
		}
		fmt.Printf("total\t%s\n", us(total))
		return
	}
	var names []string
	var sums []map[string]float64
	var totals []float64
	for _, arg := range flag.Args() {
		name, files, ok := strings.Cut(arg, "=")
		if !ok {
			fail(fmt.Errorf("%q: want NAME=TRACES[,BASE]", arg))
		}
		traces, b, _ := strings.Cut(files, ",")
		sum, total, err := perCall(traces, b, *calls)
		if err != nil {
			fail(err)
		}
		names, sums, totals = append(names, name), append(sums, sum), append(totals, total)
	}
	fmt.Printf("| hop (µs CPU per call) | %s |\n|---|%s\n", strings.Join(names, " | "), strings.Repeat("---:|", len(names)))
	for _, row := range rows {
		fmt.Printf("| %s |", strings.Replace(row, "  ", "&nbsp;&nbsp;", 1))
		for _, sum := range sums {
			fmt.Printf(" %s |", us(sum[row]))
		}
		fmt.Println()
	}
	fmt.Print("| **total** |")
	for _, t := range totals {
		fmt.Printf(" **%s** |", us(t))
	}
	fmt.Println()
}
