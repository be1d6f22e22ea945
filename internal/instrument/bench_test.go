package instrument

import (
	"context"
	"testing"
)

// BenchmarkPrepareGo prepares hello-go.wasm, a 3.3 MB Go wasip1 module:
// decoding, exporting globals, scanning the code, encoding, and wazero's
// validation.
func BenchmarkPrepareGo(b *testing.B) {
	in := readFile(b, helloGo)
	ctx := context.Background()
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := Prepare(ctx, in); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRewriteGo is the pass alone, without wazero's validation:
// decode, export, scan and encode hello-go.wasm.
func BenchmarkRewriteGo(b *testing.B) {
	in := readFile(b, helloGo)
	ctx := context.Background()
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		m, err := Decode(ctx, in)
		if err != nil {
			b.Fatal(err)
		}
		info, err := ExportMutableGlobals(m)
		if err != nil {
			b.Fatal(err)
		}
		if err := ScanCode(ctx, m, info); err != nil {
			b.Fatal(err)
		}
		if _, err := m.Encode(); err != nil {
			b.Fatal(err)
		}
	}
}
