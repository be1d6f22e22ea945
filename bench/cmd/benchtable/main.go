// Command benchtable turns `go test -bench` output into the markdown tables
// in bench/README.md. -bench picks the benchmark and the table:
//
//   - BenchmarkInvoke (the default): each mode's throughput, median and p99
//     latency, with throughput and median as ratios against the native
//     baseline (-baseline), and p99/p50 and late/early (the second half's
//     throughput over the first's) when the runs report them;
//   - BenchmarkColdStart: each case's mean operation (with the range of the
//     runs' means), median and slowest operation (means over runs), the
//     deploy and first-result parts of deploy-to-first-result, and each
//     case as a multiple of the warm call of the same module;
//   - BenchmarkReset (package internal/sandbox): fresh, reset and
//     warm-noreset time per call of each case, then the three goals of the
//     snapshot design (docs/architecture.md, "Reactor lifecycle") as
//     measured ratios.
//
// For example:
//
//	go test -run '^$' -bench BenchmarkInvoke -benchtime 3s ./bench/ | tee out.txt
//	go run ./bench/cmd/benchtable < out.txt
//
// With -count N, or several runs of one sub-benchmark in the input (say,
// two commands with different -benchtime concatenated), each metric is the
// mean of the runs; the reset table also gives their range.
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
	bench := fs.String("bench", "BenchmarkInvoke", "benchmark whose sub-benchmarks are the rows (BenchmarkInvoke, BenchmarkColdStart or BenchmarkReset)")
	baseline := fs.String("baseline", "native", "BenchmarkInvoke: sub-benchmark the ratios are against")
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
	var s string
	switch *bench {
	case "BenchmarkColdStart":
		s, err = coldTable(rows)
	case "BenchmarkReset":
		s, err = resetTable(rows)
	default:
		s, err = invokeTable(rows, *baseline)
	}
	if err != nil {
		return err
	}
	_, err = io.WriteString(out, s)
	return err
}

// row is one sub-benchmark's runs.
type row struct {
	name string               // the sub-benchmark path, without the GOMAXPROCS suffix
	ops  int                  // iterations over all runs
	runs []map[string]float64 // each run's metrics by unit, ns/op included
}

// mean returns the mean of a metric over the runs, and false unless every
// run reported it.
func (r *row) mean(unit string) (float64, bool) {
	var sum float64
	for _, m := range r.runs {
		v, ok := m[unit]
		if !ok {
			return 0, false
		}
		sum += v
	}
	return sum / float64(len(r.runs)), len(r.runs) > 0
}

// span returns the smallest and largest value of a metric over the runs.
func (r *row) span(unit string) (lo, hi float64) {
	for i, m := range r.runs {
		v := m[unit]
		if i == 0 || v < lo {
			lo = v
		}
		if i == 0 || v > hi {
			hi = v
		}
	}
	return lo, hi
}

// nameRE matches "BenchmarkX/mode-8" and captures the sub-benchmark path
// without the GOMAXPROCS suffix.
var nameRE = regexp.MustCompile(`^(Benchmark[^/\s]+)/(\S+?)(?:-\d+)?$`)

// parse reads benchmark result lines and returns one row per sub-benchmark
// of the named benchmark, in first-seen order.
func parse(in io.Reader, bench string) ([]*row, error) {
	var rows []*row
	byName := map[string]*row{}
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
		n, err := strconv.Atoi(f[1])
		if err != nil {
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
		r := byName[m[2]]
		if r == nil {
			r = &row{name: m[2]}
			byName[m[2]] = r
			rows = append(rows, r)
		}
		r.ops += n
		r.runs = append(r.runs, metrics)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(rows) == 0 {
		return nil, errors.New("no " + bench + " results in the input")
	}
	return rows, nil
}

// need returns the means of the given metrics, or an error naming the first
// one a run of r lacks.
func need(r *row, units ...string) ([]float64, error) {
	out := make([]float64, len(units))
	for i, u := range units {
		v, ok := r.mean(u)
		if !ok {
			return nil, fmt.Errorf("%s: a run has no %s metric", r.name, u)
		}
		out[i] = v
	}
	return out, nil
}

// invokeTable renders BenchmarkInvoke rows. Throughput is given as a
// fraction of the baseline's, and median latency as a multiple of it;
// without a baseline row the ratio columns say n/a.
func invokeTable(rows []*row, baseline string) (string, error) {
	vals := map[*row][]float64{}
	for _, r := range rows {
		v, err := need(r, "req/s", "p50-ms", "p99-ms")
		if err != nil {
			return "", err
		}
		vals[r] = v
	}
	var base []float64
	for _, r := range rows {
		if r.name == baseline {
			base = vals[r]
		}
	}
	// The tail's spread and the sustained-load ratio, when every row has
	// them (BenchmarkInvoke reports both; older output does not).
	extra := true
	for _, r := range rows {
		if _, err := need(r, "p99/p50", "late/early"); err != nil {
			extra = false
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "| mode | req/s | p50 ms | p99 ms | req/s vs %s | p50 vs %s |", baseline, baseline)
	sep := "|---|---:|---:|---:|---:|---:|"
	if extra {
		b.WriteString(" p99/p50 | late/early |")
		sep += "---:|---:|"
	}
	b.WriteString("\n" + sep + "\n")
	for _, r := range rows {
		v := vals[r]
		reqRatio, p50Ratio := "n/a", "n/a"
		if base != nil && base[0] > 0 && base[1] > 0 {
			reqRatio = ratio(v[0] / base[0])
			p50Ratio = ratio(v[1] / base[1])
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |", r.name, num(v[0]), num(v[1]), num(v[2]), reqRatio, p50Ratio)
		if extra {
			x, _ := need(r, "p99/p50", "late/early")
			fmt.Fprintf(&b, " %s | %s |", num(x[0]), num(x[1]))
		}
		b.WriteString("\n")
	}
	return b.String(), nil
}

// coldTable renders BenchmarkColdStart rows: a module's deploy-to-first-
// result (go-reactor, go-3MB-new-code) or "kind/module" paths such as
// warm/go-reactor. The last two columns divide each case's mean by the
// mean of warm/<module>, where the module is the path's last element
// without "-new-code", and a -new-code case's mean by that of the same
// module's already compiled case.
func coldTable(rows []*row) (string, error) {
	warm, means := map[string]float64{}, map[string]float64{}
	for _, r := range rows {
		if v, ok := r.mean("ms/op"); ok {
			means[r.name] = v
		}
		if mod, ok := strings.CutPrefix(r.name, "warm/"); ok {
			if v, ok := r.mean("ms/op"); ok {
				warm[mod] = v
			}
		}
	}
	var b strings.Builder
	b.WriteString("| case | ops | mean ms | p50 ms | max ms | deploy ms | first result ms | mean vs warm | new code vs compiled |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range rows {
		v, err := need(r, "ms/op", "p50-ms", "max-ms")
		if err != nil {
			return "", err
		}
		deploy, first := "", ""
		if d, ok := r.mean("deploy-ms"); ok {
			deploy = num(d)
		}
		if f, ok := r.mean("first-ms"); ok {
			first = num(f)
		}
		vsWarm := "n/a"
		mod := strings.TrimSuffix(r.name[strings.LastIndexByte(r.name, '/')+1:], "-new-code")
		if w := warm[mod]; w > 0 {
			vsWarm = ratio(v[0] / w)
		}
		vsCompiled := ""
		if same, ok := strings.CutSuffix(r.name, "-new-code"); ok && means[same] > 0 {
			vsCompiled = ratio(v[0] / means[same])
		}
		mean := num(v[0])
		if len(r.runs) > 1 {
			lo, hi := r.span("ms/op")
			mean = fmt.Sprintf("%s (%s–%s)", mean, num(lo), num(hi))
		}
		fmt.Fprintf(&b, "| %s | %d | %s | %s | %s | %s | %s | %s | %s |\n", r.name, r.ops, mean, num(v[1]), num(v[2]), deploy, first, vsWarm, vsCompiled)
	}
	return b.String(), nil
}

// resetTable renders BenchmarkReset rows ("case/mode") as one line per
// case with each mode's µs per call (mean, and the range over runs), then
// the goals.
func resetTable(rows []*row) (string, error) {
	type cas struct {
		name  string
		modes map[string]*row
	}
	var cases []*cas
	byName := map[string]*cas{}
	for _, r := range rows {
		i := strings.LastIndexByte(r.name, '/')
		if i < 0 {
			return "", fmt.Errorf("%s: want case/mode", r.name)
		}
		if _, ok := r.mean("ns/op"); !ok {
			return "", fmt.Errorf("%s: a run has no ns/op", r.name)
		}
		c := byName[r.name[:i]]
		if c == nil {
			c = &cas{name: r.name[:i], modes: map[string]*row{}}
			byName[c.name] = c
			cases = append(cases, c)
		}
		c.modes[r.name[i+1:]] = r
	}
	us := func(c *cas, mode string) (float64, bool) {
		r := c.modes[mode]
		if r == nil {
			return 0, false
		}
		v, _ := r.mean("ns/op")
		return v / 1e3, true
	}
	cell := func(c *cas, mode string) string {
		v, ok := us(c, mode)
		if !ok {
			return "—"
		}
		r := c.modes[mode]
		if len(r.runs) == 1 {
			return num(v) + " (1 run)"
		}
		lo, hi := r.span("ns/op")
		return fmt.Sprintf("%s (%s–%s)", num(v), num(lo/1e3), num(hi/1e3))
	}
	var b strings.Builder
	b.WriteString("| case | fresh µs | reset µs | warm-noreset µs | pages/reset | fresh ÷ reset |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|\n")
	for _, c := range cases {
		pages, speedup := "—", "—"
		if r := c.modes["reset"]; r != nil {
			if p, ok := r.mean("pages/reset"); ok {
				pages = num(p)
			}
		}
		if f, ok := us(c, "fresh"); ok {
			if r, ok := us(c, "reset"); ok && r > 0 {
				speedup = ratio(f / r)
			}
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", c.name, cell(c, "fresh"), cell(c, "reset"), cell(c, "warm-noreset"), pages, speedup)
	}
	// The reset goals (docs/architecture.md, "Reactor lifecycle"), as the
	// issue stated them.
	goal := func(desc, target string, num, den *cas, numMode, denMode string, met func(float64) bool) {
		if num == nil || den == nil {
			return
		}
		a, ok1 := us(num, numMode)
		d, ok2 := us(den, denMode)
		if !ok1 || !ok2 || d <= 0 {
			return
		}
		verdict := "no"
		if met(a / d) {
			verdict = "yes"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", desc, target, ratio(a/d), verdict)
	}
	b.WriteString("\n| goal | target | measured | met |\n|---|---:|---:|---|\n")
	one, big, gor := byName["mem=1MiB"], byName["mem=64MiB"], byName["go-reactor"]
	goal("fresh ÷ reset, 1 MiB", "≥ 50×", one, one, "fresh", "reset", func(x float64) bool { return x >= 50 })
	goal("reset 64 MiB ÷ reset 1 MiB", "≤ 2×", big, one, "reset", "reset", func(x float64) bool { return x <= 2 })
	goal("fresh ÷ reset, Go reactor", "≥ 100×", gor, gor, "fresh", "reset", func(x float64) bool { return x >= 100 })
	return b.String(), nil
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
