package main

import (
	"os"
	"reflect"
	"strings"
	"testing"
)

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		stack []string
		want  []string
	}{
		// The client's receipt check: charged to the client, not to the
		// shared receipt package.
		{[]string{"crypto/internal/fips140/edwards25519.(*Point).VarTimeDoubleScalarBaseMult", mod + "internal/receipt.verify",
			mod + "internal/receipt.(*Verifier).Verify", mod + "client.(*Client).invokePlain", mod + "bench.runLoad.func1"},
			[]string{"client", "  client: receipt verification"}},
		// The worker's signature.
		{[]string{"crypto/ed25519.Sign", mod + "internal/receipt.Sign", mod + "internal/worker.(*Worker).receipt", mod + "internal/bus.serve.func1.1"},
			[]string{"worker", "  worker: receipt signing"}},
		// JSON is its own row wherever it is called.
		{[]string{"encoding/json.checkValid", "encoding/json.Unmarshal", mod + "client.(*Client).doHeader"}, []string{"json"}},
		// The worker's replay check is the bus's work.
		{[]string{"internal/runtime/syscall/linux.Syscall6", "github.com/nats-io/nats.go.(*Conn).publish", mod + "internal/worker.rememberNonce"}, []string{"bus"}},
		// The worker's ledger appenders are the ledger's.
		{[]string{"crypto/sha256.Sum256", mod + "internal/receipt.batchMessage", mod + "internal/worker.(*Worker).appendBatch"}, []string{"ledger"}},
		{[]string{"runtime.scanObject", "runtime.gcDrain", "runtime.gcBgMarkWorker"}, []string{"runtime"}},
		{[]string{"syscall.Syscall", "net/http.(*conn).serve"}, []string{"http"}},
		{[]string{"runtime.memclrNoHeapPointers", mod + "internal/sandbox.(*cowMemory).restore"}, []string{"sandbox"}},
	} {
		if got := classify(tc.stack); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("classify(%s): got %q, want %q", tc.stack[0], got, tc.want)
		}
	}
}

func TestReadTraces(t *testing.T) {
	in := `File: bench.test
Type: cpu
Duration: 1.38s, Total samples = 2.24s (162.02%)
-----------+-------------------------------------------------------
      10ms   crypto/ed25519.Sign
             ` + mod + `internal/receipt.Sign
             ` + mod + `internal/worker.(*Worker).receipt
-----------+-------------------------------------------------------
      30ms   runtime.gcDrain
             runtime.gcBgMarkWorker
-----------+-------------------------------------------------------
`
	got, err := readTraces(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{"worker": 0.01, "  worker: receipt signing": 0.01, "runtime": 0.03}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}

// TestPerCall: pooled files add up, the base is subtracted row by row, and
// sub-rows stay out of the total.
func TestPerCall(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := dir + "/" + name
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	sample := func(w, frame string) string {
		return "-----------+---\n      " + w + "   " + frame + "\n"
	}
	a := write("a", sample("30ms", mod+"internal/worker.(*Worker).invoke")+sample("20ms", "net/http.(*conn).serve"))
	b := write("b", sample("10ms", mod+"internal/receipt.Sign")+sample("10ms", "net/http.(*conn).serve"))
	base := write("base", sample("10ms", "net/http.(*conn).serve"))
	sum, total, err := perCall(a+"+"+b, base, 1000)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{"worker": 40, "  worker: receipt signing": 10, "http": 20}
	for row, v := range want {
		if d := sum[row] - v; d > 1e-9 || d < -1e-9 {
			t.Errorf("%s: got %v µs, want %v", row, sum[row], v)
		}
	}
	if total < 60-1e-9 || total > 60+1e-9 {
		t.Errorf("total: got %v µs, want 60 (sub-rows not counted)", total)
	}
}
