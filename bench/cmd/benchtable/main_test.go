package main

import (
	"bytes"
	"strings"
	"testing"
)

const sample = `goos: linux
goarch: amd64
pkg: github.com/cloister-faas/cloister/bench
cpu: Some CPU @ 2.00GHz
BenchmarkInvoke/hpke-2         	    1000	   2000000 ns/op	       500.0 req/s	        15.00 p50-ms	        40.00 p99-ms
BenchmarkInvoke/session-2      	    2000	   1000000 ns/op	      1000 req/s	         7.000 p50-ms	        20.00 p99-ms
BenchmarkInvoke/native-2       	   40000	     50000 ns/op	     20000 req/s	         0.3500 p50-ms	         1.000 p99-ms
BenchmarkInvoke/native-2       	   40000	     50000 ns/op	     20000 req/s	         0.3500 p50-ms	         1.000 p99-ms
BenchmarkOther/native-2        	       1	         1 ns/op	         1 req/s	         1 p50-ms	         1 p99-ms
PASS
ok  	github.com/cloister-faas/cloister/bench	12.3s
`

func TestRun(t *testing.T) {
	var out bytes.Buffer
	if err := run(nil, strings.NewReader(sample), &out); err != nil {
		t.Fatal(err)
	}
	want := `| mode | req/s | p50 ms | p99 ms | req/s vs native | p50 vs native |
|---|---:|---:|---:|---:|---:|
| hpke | 500 | 15.0 | 40.0 | 0.025× | 42.9× |
| session | 1000 | 7.00 | 20.0 | 0.050× | 20.0× |
| native | 20000 | 0.350 | 1.00 | 1.00× | 1.00× |
`
	if got := out.String(); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

func TestRunSustained(t *testing.T) {
	in := "BenchmarkInvoke/plaintext-2 100 1 ns/op 1000 req/s 2 p50-ms 6 p99-ms 3.000 p99/p50 0.9500 late/early\n" +
		"BenchmarkInvoke/native-2 100 1 ns/op 10000 req/s 0.5 p50-ms 1 p99-ms 2.000 p99/p50 1.010 late/early\n"
	var out bytes.Buffer
	if err := run(nil, strings.NewReader(in), &out); err != nil {
		t.Fatal(err)
	}
	want := `| mode | req/s | p50 ms | p99 ms | req/s vs native | p50 vs native | p99/p50 | late/early |
|---|---:|---:|---:|---:|---:|---:|---:|
| plaintext | 1000 | 2.00 | 6.00 | 0.100× | 4.00× | 3.00 | 0.950 |
| native | 10000 | 0.500 | 1.00 | 1.00× | 1.00× | 2.00 | 1.01 |
`
	if got := out.String(); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

func TestRunAveragesRuns(t *testing.T) {
	in := "BenchmarkInvoke/native-2 10 1 ns/op 100 req/s 1 p50-ms 2 p99-ms\n" +
		"BenchmarkInvoke/native-2 10 1 ns/op 300 req/s 3 p50-ms 4 p99-ms\n"
	rows, err := parse(strings.NewReader(in), "BenchmarkInvoke")
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 1 || len(rows[0].runs) != 2 || rows[0].ops != 20 {
		t.Fatalf("got %+v, want one native row of 2 runs", rows)
	}
	v, err := need(rows[0], "req/s", "p50-ms", "p99-ms")
	if err != nil || v[0] != 200 || v[1] != 2 || v[2] != 3 {
		t.Errorf("means %v, %v; want 200 req/s, p50 2, p99 3", v, err)
	}
}

const coldSample = `BenchmarkColdStart/module-100KB-2  3  13000000 ns/op  10.00 deploy-ms  3.000 first-ms  15.00 max-ms  13.00 ms/op  12.00 p50-ms
BenchmarkColdStart/module-100KB-new-code-2  3  17000000 ns/op  12.00 deploy-ms  5.000 first-ms  19.00 max-ms  17.00 ms/op  18.00 p50-ms
BenchmarkColdStart/after-scale-to-zero/module-100KB-2  3  1500000 ns/op  1.600 max-ms  1.500 ms/op  1.500 p50-ms
BenchmarkColdStart/warm/module-100KB-2  3  1000000 ns/op  1.100 max-ms  1.000 ms/op  1.000 p50-ms
BenchmarkColdStart/warm/module-100KB-2  3  1000000 ns/op  1.100 max-ms  0.5000 ms/op  1.000 p50-ms
BenchmarkColdStart/warm/go-reactor-2  3  1000000 ns/op  1.100 max-ms  2.000 ms/op  1.000 p50-ms
`

func TestColdTable(t *testing.T) {
	var out bytes.Buffer
	if err := run([]string{"-bench", "BenchmarkColdStart"}, strings.NewReader(coldSample), &out); err != nil {
		t.Fatal(err)
	}
	want := `| case | ops | mean ms | p50 ms | max ms | deploy ms | first result ms | mean vs warm | new code vs compiled |
|---|---:|---:|---:|---:|---:|---:|---:|---:|
| module-100KB | 3 | 13.0 | 12.0 | 15.0 | 10.0 | 3.00 | 17.3× |  |
| module-100KB-new-code | 3 | 17.0 | 18.0 | 19.0 | 12.0 | 5.00 | 22.7× | 1.31× |
| after-scale-to-zero/module-100KB | 3 | 1.50 | 1.50 | 1.60 |  |  | 2.00× |  |
| warm/module-100KB | 6 | 0.750 (0.500–1.00) | 1.00 | 1.10 |  |  | 1.00× |  |
| warm/go-reactor | 3 | 2.00 | 1.00 | 1.10 |  |  | 1.00× |  |
`
	if got := out.String(); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

const resetSample = `BenchmarkReset/mem=1MiB/fresh-2          2000  200000 ns/op
BenchmarkReset/mem=1MiB/fresh-2          2000  300000 ns/op
BenchmarkReset/mem=1MiB/reset-2          2000    5000 ns/op  2.000 pages/reset
BenchmarkReset/mem=1MiB/warm-noreset-2   2000     100 ns/op
BenchmarkReset/mem=64MiB/fresh-2         2000 3000000 ns/op
BenchmarkReset/mem=64MiB/reset-2         2000   12000 ns/op  2.000 pages/reset
BenchmarkReset/go-reactor/reset-2        2000   50000 ns/op  40.00 pages/reset
BenchmarkReset/go-reactor/fresh-2          20 6000000 ns/op
`

func TestResetTable(t *testing.T) {
	var out bytes.Buffer
	if err := run([]string{"-bench", "BenchmarkReset"}, strings.NewReader(resetSample), &out); err != nil {
		t.Fatal(err)
	}
	want := `| case | fresh µs | reset µs | warm-noreset µs | pages/reset | fresh ÷ reset |
|---|---:|---:|---:|---:|---:|
| mem=1MiB | 250 (200–300) | 5.00 (1 run) | 0.100 (1 run) | 2.00 | 50.0× |
| mem=64MiB | 3000 (1 run) | 12.0 (1 run) | — | 2.00 | 250× |
| go-reactor | 6000 (1 run) | 50.0 (1 run) | — | 40.0 | 120× |

| goal | target | measured | met |
|---|---:|---:|---|
| fresh ÷ reset, 1 MiB | ≥ 50× | 50.0× | yes |
| reset 64 MiB ÷ reset 1 MiB | ≤ 2× | 2.40× | no |
| fresh ÷ reset, Go reactor | ≥ 100× | 120× | yes |
`
	if got := out.String(); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

func TestRunErrors(t *testing.T) {
	for name, in := range map[string]string{
		"empty":          "",
		"other bench":    "BenchmarkOther/x-2 1 1 ns/op 1 req/s 1 p50-ms 1 p99-ms\n",
		"missing metric": "BenchmarkInvoke/x-2 1 1 ns/op 1 req/s 1 p50-ms\n",
		"bad number":     "BenchmarkInvoke/x-2 1 one ns/op 1 req/s 1 p50-ms 1 p99-ms\n",
	} {
		if err := run(nil, strings.NewReader(in), &bytes.Buffer{}); err == nil {
			t.Errorf("%s: run succeeded, want an error", name)
		}
	}
	if err := run([]string{"extra"}, strings.NewReader(sample), &bytes.Buffer{}); err == nil {
		t.Error("run with a positional argument succeeded, want an error")
	}
}

func TestNoBaseline(t *testing.T) {
	var out bytes.Buffer
	if err := run([]string{"-baseline", "nope"}, strings.NewReader(sample), &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "| hpke | 500 | 15.0 | 40.0 | n/a | n/a |") {
		t.Errorf("got\n%s\nwant n/a ratios", out.String())
	}
}
