package ledger_test

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"os"

	"github.com/cloister-faas/cloister/internal/ledger"
)

func Example() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "ledger-example-")
	defer os.RemoveAll(dir)

	// The coordinator signs checkpoints with its identity key.
	coordinator := ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize))
	signer, verifier, _ := ledger.NewSigner("cloister.example/ledger", coordinator)
	l, err := ledger.Open(ctx, ledger.Options{Dir: dir, Signer: signer, CheckpointInterval: ledger.MinCheckpointInterval, Logger: quietLogger()})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer l.Close(ctx)

	receipt := []byte(`{"v":1,"invocation_id":"inv-1"}`)
	index, _ := l.Append(ctx, receipt) // durable when it returns
	l.AwaitPublished(ctx, index)       // provable once a checkpoint covers it

	// A client with only the files (or their HTTP mirror) and the key.
	r := ledger.NewReader(ledger.DirSource(dir), verifier, "cloister.example/ledger")
	cp, err := r.VerifyEntry(ctx, receipt, index)
	fmt.Println(index, cp.Size, err)
	// Output: 0 1 <nil>
}
