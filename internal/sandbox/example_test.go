package sandbox_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/cloister-faas/cloister/internal/sandbox"
)

func Example() {
	ctx := context.Background()
	engine, err := sandbox.New(ctx, sandbox.Config{})
	if err != nil {
		log.Fatal(err)
	}
	defer engine.Close(ctx)

	wasm, err := os.ReadFile("testdata/echo.wasm")
	if err != nil {
		log.Fatal(err)
	}
	// The code hash would be the digest of wasm; any stable key works here.
	mod, err := engine.Compile(ctx, "echo", wasm, sandbox.Limits{Timeout: time.Second})
	if err != nil {
		log.Fatal(err)
	}
	res, err := mod.Run(ctx, sandbox.Invocation{
		Stdin: []byte("hello from the sandbox"),
		Meta:  map[string]string{"CLOISTER_FUNCTION": "echo"},
	})
	switch {
	case errors.Is(err, sandbox.ErrMemoryLimit):
		fmt.Println("out of memory")
	case err != nil:
		fmt.Println("failed:", err)
	default:
		fmt.Printf("%s (exit %d)\n", res.Stdout, res.ExitCode)
	}
	// Output: hello from the sandbox (exit 0)
}
