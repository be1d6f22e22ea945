package instrument

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"path/filepath"
	"testing"
)

// FuzzMeter feeds PrepareMetered arbitrary bytes. It must never panic,
// must fail with one of its sentinel errors, and when it succeeds its
// output must validate and be the same on a second run. It must succeed
// whenever Prepare does, unless the input exports the meter's names
// (ErrReserved) or has a body at MaxFunctionLocals (ErrLimit); and it must
// fail whenever Prepare does.
//
// The seeds are those of FuzzPrepare (this package's metering fixtures
// among them), and random programs of progGen.
//
//	go test ./internal/instrument/ -run '^$' -fuzz FuzzMeter -fuzztime 30s
func FuzzMeter(f *testing.F) {
	for _, path := range fixtures(f) {
		if filepath.Base(path) == filepath.Base(helloGo) {
			continue
		}
		f.Add(readFile(f, path))
	}
	for _, in := range corpus(f, "../sandbox/testdata/fuzz/FuzzCompile") {
		f.Add(in)
	}
	f.Add([]byte(header))
	f.Add(oneBody(0, 0x0b))
	f.Add(oneBody(0, 0x03, 0x40, 0x0c, 0x00, 0x0b, 0x0b))             // loop br 0 end
	f.Add(oneBody(0, 0x02, 0x40, 0x0f, 0x23, 0x00, 0x1a, 0x0b, 0x0b)) // block return global.get 0 drop end
	for seed := range uint64(8) {
		r := rand.New(rand.NewPCG(seed, 0xf022))
		f.Add(genModule(r, 1+r.IntN(3)))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		ctx := context.Background()
		out, _, mi, err := PrepareMetered(ctx, in)
		_, _, perr := Prepare(ctx, in)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrLimit) &&
				!errors.Is(err, ErrReserved) && !errors.Is(err, ErrInvalid) {
				t.Fatalf("error wraps no sentinel: %v", err)
			}
			if perr == nil && !errors.Is(err, ErrReserved) && !errors.Is(err, ErrLimit) {
				t.Fatalf("Prepare succeeds, PrepareMetered fails: %v", err)
			}
			return
		}
		if perr != nil {
			t.Fatalf("PrepareMetered succeeds, Prepare fails: %v", perr)
		}
		if err := validate(ctx, out); err != nil {
			t.Fatalf("output does not validate: %v", err)
		}
		out2, _, mi2, err := PrepareMetered(ctx, in)
		if err != nil || !bytes.Equal(out, out2) || *mi != *mi2 {
			t.Fatalf("a second run differs (error %v)", err)
		}
		if _, _, _, err := PrepareMetered(ctx, out); !errors.Is(err, ErrReserved) {
			t.Fatalf("metering the output again: got %v, want ErrReserved", err)
		}
	})
}
