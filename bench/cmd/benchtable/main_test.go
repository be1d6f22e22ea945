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

func TestRunAveragesRuns(t *testing.T) {
	in := "BenchmarkInvoke/native-2 10 1 ns/op 100 req/s 1 p50-ms 2 p99-ms\n" +
		"BenchmarkInvoke/native-2 10 1 ns/op 300 req/s 3 p50-ms 4 p99-ms\n"
	rows, err := parse(strings.NewReader(in), "BenchmarkInvoke")
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 1 || rows[0].runs != 2 || rows[0].reqs != 200 || rows[0].p50 != 2 || rows[0].p99 != 3 {
		t.Errorf("got %+v, want one native row of 2 runs: 200 req/s, p50 2, p99 3", rows[0])
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
