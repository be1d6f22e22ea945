package instrument

import (
	"context"
	"testing"
)

// benchGoPass runs pass over hello-go.wasm, a 3.3 MB Go wasip1 module, once
// per iteration.
func benchGoPass(b *testing.B, pass func(ctx context.Context, in []byte) error) {
	in := readFile(b, helloGo)
	ctx := context.Background()
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		if err := pass(ctx, in); err != nil {
			b.Fatal(err)
		}
	}
}

// rewriteOnly is the pass without wazero's validation: decode, export,
// scan, meter (if asked) and encode.
func rewriteOnly(ctx context.Context, in []byte, meter bool) error {
	m, err := Decode(ctx, in)
	if err != nil {
		return err
	}
	info, err := ExportMutableGlobals(m)
	if err != nil {
		return err
	}
	if err := ScanCode(ctx, m, info); err != nil {
		return err
	}
	if meter {
		if _, err := Meter(ctx, m); err != nil {
			return err
		}
	}
	_, err = m.Encode()
	return err
}

// BenchmarkPrepareGo prepares hello-go.wasm: decoding, exporting globals,
// scanning the code, encoding, and wazero's validation.
func BenchmarkPrepareGo(b *testing.B) {
	benchGoPass(b, func(ctx context.Context, in []byte) error {
		_, _, err := Prepare(ctx, in)
		return err
	})
}

// BenchmarkRewriteGo is the pass alone, without wazero's validation:
// decode, export, scan and encode hello-go.wasm.
func BenchmarkRewriteGo(b *testing.B) {
	benchGoPass(b, func(ctx context.Context, in []byte) error { return rewriteOnly(ctx, in, false) })
}
