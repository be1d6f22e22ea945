// Command benchtable turns the output of `go test -bench BenchmarkInvoke`
// into the markdown table in bench/README.md, with each mode's throughput
// and median latency as ratios against the native baseline.
//
//	go test -run '^$' -bench BenchmarkInvoke -benchtime 3s ./bench/ | tee out.txt
//	go run ./bench/cmd/benchtable < out.txt
//
// With -count N, each metric is the mean of the N runs. It reads only the
// req/s, p50-ms and p99-ms metrics the benchmark reports.
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
)

func main() {
	if err := run(os.Args[1:], os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "benchtable:", err)
		os.Exit(1)
	}
}

func run(args []string, in io.Reader, out io.Writer) error {
	fs := flag.NewFlagSet("benchtable", flag.ContinueOnError)
	bench := fs.String("bench", "BenchmarkInvoke", "benchmark whose sub-benchmarks are the rows")
	baseline := fs.String("baseline", "native", "sub-benchmark the ratios are against")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q; the benchmark output is read from stdin", fs.Args())
	}
	rows, err := parse(in, *bench)
	if err != nil {
		return err
	}
	_, err = io.WriteString(out, table(rows, *baseline))
	return err
}

// row is one mode's metrics, averaged over its runs.
type row struct {
	mode           string
	runs           int
	reqs, p50, p99 float64 // means over runs
	sum            [3]float64
}

// nameRE matches "BenchmarkX/mode-8" and captures the mode without the
// GOMAXPROCS suffix.
var nameRE = regexp.MustCompile(`^(Benchmark[^/\s]+)/(\S+?)(?:-\d+)?$`)

// parse reads benchmark result lines and returns one row per mode of the
// named benchmark, in first-seen order.
func parse(in io.Reader, bench string) ([]*row, error) {
	var rows []*row
	byMode := map[string]*row{}
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 {
			continue
		}
		m := nameRE.FindStringSubmatch(f[0])
		if m == nil || m[1] != bench {
			continue
		}
		if _, err := strconv.Atoi(f[1]); err != nil {
			continue // not a result line
		}
		metrics := map[string]float64{}
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				return nil, fmt.Errorf("parsing %q in %q: %w", f[i], sc.Text(), err)
			}
			metrics[f[i+1]] = v
		}
		for _, unit := range []string{"req/s", "p50-ms", "p99-ms"} {
			if _, ok := metrics[unit]; !ok {
				return nil, fmt.Errorf("line %q has no %s metric", sc.Text(), unit)
			}
		}
		r := byMode[m[2]]
		if r == nil {
			r = &row{mode: m[2]}
			byMode[m[2]] = r
			rows = append(rows, r)
		}
		r.runs++
		r.sum[0] += metrics["req/s"]
		r.sum[1] += metrics["p50-ms"]
		r.sum[2] += metrics["p99-ms"]
		n := float64(r.runs)
		r.reqs, r.p50, r.p99 = r.sum[0]/n, r.sum[1]/n, r.sum[2]/n
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(rows) == 0 {
		return nil, errors.New("no " + bench + " results in the input")
	}
	return rows, nil
}

// table renders rows as markdown. Throughput is given as a fraction of the
// baseline's, and median latency as a multiple of it; without a baseline
// row the ratio columns say n/a.
func table(rows []*row, baseline string) string {
	var base *row
	for _, r := range rows {
		if r.mode == baseline {
			base = r
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "| mode | req/s | p50 ms | p99 ms | req/s vs %s | p50 vs %s |\n", baseline, baseline)
	b.WriteString("|---|---:|---:|---:|---:|---:|\n")
	for _, r := range rows {
		reqRatio, p50Ratio := "n/a", "n/a"
		if base != nil && base.reqs > 0 && base.p50 > 0 {
			reqRatio = ratio(r.reqs / base.reqs)
			p50Ratio = ratio(r.p50 / base.p50)
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", r.mode, num(r.reqs), num(r.p50), num(r.p99), reqRatio, p50Ratio)
	}
	return b.String()
}

// num prints three significant digits, without exponents.
func num(v float64) string {
	switch {
	case v >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case v >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case v >= 1:
		return strconv.FormatFloat(v, 'f', 2, 64)
	default:
		return strconv.FormatFloat(v, 'f', 3, 64)
	}
}

func ratio(v float64) string { return num(v) + "×" }
