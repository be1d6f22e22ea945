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

func main() {
	calls := flag.Int("calls", 0, "the calls the profiled run made")
	base := flag.String("base", "", "traces of a profile to subtract, row by row")
	flag.Parse()
	if flag.NArg() != 1 || *calls <= 0 {
		fmt.Fprintln(os.Stderr, "usage: hops -calls N [-base TRACES] TRACES")
		os.Exit(2)
	}
	sum, err := readFile(flag.Arg(0))
	if err != nil {
		fmt.Fprintln(os.Stderr, "hops:", err)
		os.Exit(1)
	}
	if *base != "" {
		b, err := readFile(*base)
		if err != nil {
			fmt.Fprintln(os.Stderr, "hops:", err)
			os.Exit(1)
		}
		for row, v := range b {
			sum[row] -= v
		}
	}
	total := 0.0
	for _, row := range rows {
		if !strings.HasPrefix(row, " ") {
			total += sum[row]
		}
	}
	for _, row := range rows {
		fmt.Printf("%s\t%s\n", row, strconv.FormatFloat(sum[row]/float64(*calls)*1e6, 'f', 0, 64))
	}
	fmt.Printf("total\t%s\n", strconv.FormatFloat(total/float64(*calls)*1e6, 'f', 0, 64))
}
