package main

import (
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
