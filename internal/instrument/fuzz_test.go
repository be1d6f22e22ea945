package instrument

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// FuzzPrepare feeds Prepare arbitrary bytes. It must never panic nor
// allocate beyond the input's size, must fail with one of its sentinel
// errors, and when it succeeds its output must validate and be a fixed
// point: preparing it again gives the same bytes and the same Info.
//
// The seeds are the fixtures, less hello-go.wasm (3.3 MB: mutating it
// would spend the fuzzing time compiling it), the sandbox's corpus of
// inputs hostile to wazero, and small modules.
//
//	go test ./internal/instrument/ -run '^$' -fuzz FuzzPrepare -fuzztime 30s
func FuzzPrepare(f *testing.F) {
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
	f.Add(oneBody(1, 2, 0x7b, 0xfd, 12, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 0x21, 0, 0x0b))
	f.Fuzz(func(t *testing.T, in []byte) {
		ctx := context.Background()
		out, info, err := Prepare(ctx, in)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrLimit) &&
				!errors.Is(err, ErrReserved) && !errors.Is(err, ErrInvalid) {
				t.Fatalf("error wraps no sentinel: %v", err)
			}
			return
		}
		if err := validate(ctx, out); err != nil {
			t.Fatalf("output does not validate: %v", err)
		}
		out2, info2, err := Prepare(ctx, out)
		if err != nil {
			t.Fatalf("Prepare of its own output: %v", err)
		}
		if !reflect.DeepEqual(info, info2) {
			t.Fatalf("Info differs on the output: got %+v, first %+v", info2, info)
		}
		if !bytes.Equal(out, out2) {
			t.Fatalf("Prepare of its own output changed it (%d bytes to %d)", len(out), len(out2))
		}
	})
}

// corpus reads the []byte inputs of a Go fuzzing corpus directory ("go
// test fuzz v1" files of one []byte value). A missing directory is empty.
func corpus(f *testing.F, dir string) [][]byte {
	f.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*"))
	if err != nil {
		f.Fatal(err)
	}
	var ins [][]byte
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		if len(lines) != 2 || lines[0] != "go test fuzz v1" ||
			!strings.HasPrefix(lines[1], "[]byte(") || !strings.HasSuffix(lines[1], ")") {
			continue
		}
		s, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lines[1], "[]byte("), ")"))
		if err != nil {
			f.Fatalf("%s: %v", file, err)
		}
		ins = append(ins, []byte(s))
	}
	return ins
}
