package sandbox

import (
	"errors"
	"testing"
)

func TestScanModuleFixtures(t *testing.T) {
	tests := []struct {
		fixture string
		want    moduleShape
	}{
		{fixture: "echo", want: moduleShape{hasMemory: true, memoryMin: 1}},
		{fixture: "trap", want: moduleShape{}},
		{fixture: "big_output", want: moduleShape{hasMemory: true, memoryMin: 2}},
		{fixture: "huge_memory", want: moduleShape{hasMemory: true, memoryMin: 20000}},
		{fixture: "import_global", want: moduleShape{hasMemory: true, memoryMin: 1, nonFuncImports: 1}},
		{fixture: "no_memory", want: moduleShape{}},
	}
	for _, tt := range tests {
		t.Run(tt.fixture, func(t *testing.T) {
			got, err := scanModule(fixture(t, tt.fixture))
			if err != nil {
				t.Fatalf("scanModule: %v", err)
			}
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

// header is the magic number and version 1 of a binary module.
const header = "\x00asm\x01\x00\x00\x00"

func TestScanModule(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    moduleShape
		wantErr bool
	}{
		{name: "empty module", in: header, want: moduleShape{}},
		{name: "memory min 3", in: header + "\x05\x03\x01\x00\x03", want: moduleShape{hasMemory: true, memoryMin: 3}},
		{name: "memory min 2 max 5", in: header + "\x05\x04\x01\x01\x02\x05", want: moduleShape{hasMemory: true, memoryMin: 2}},
		{name: "memory min as multi-byte LEB", in: header + "\x05\x05\x01\x00\xa0\x9c\x01", want: moduleShape{hasMemory: true, memoryMin: 20000}},
		{name: "imported memory", in: header + "\x02\x08\x01\x01m\x01n\x02\x00\x07", want: moduleShape{hasMemory: true, memoryMin: 7, nonFuncImports: 1}},
		{name: "imported function", in: header + "\x02\x07\x01\x01m\x01f\x00\x00", want: moduleShape{}},
		{name: "imported table", in: header + "\x02\x09\x01\x01m\x01t\x01\x70\x00\x01", want: moduleShape{nonFuncImports: 1}},
		{name: "unknown section skipped", in: header + "\x00\x03\x01x\x00", want: moduleShape{}},
		{name: "no header", in: "", wantErr: true},
		{name: "bad magic", in: "\x00wasm\x01\x00\x00", wantErr: true},
		{name: "version 2", in: "\x00asm\x02\x00\x00\x00", wantErr: true},
		{name: "section overruns", in: header + "\x05\x10\x01", wantErr: true},
		{name: "truncated size", in: header + "\x05", wantErr: true},
		{name: "size LEB too long", in: header + "\x05\xff\xff\xff\xff\x7f", wantErr: true},
		{name: "size LEB over 32 bits", in: header + "\x05\x80\x80\x80\x80\x10", wantErr: true},
		{name: "memory count without memories", in: header + "\x05\x01\x02", wantErr: true},
		{name: "memory64 flags", in: header + "\x05\x03\x01\x04\x01", wantErr: true},
		{name: "unknown import kind", in: header + "\x02\x07\x01\x01m\x01f\x09\x00", wantErr: true},
		{name: "import name overruns", in: header + "\x02\x03\x01\x09m", wantErr: true},
		{name: "GC reference type in table", in: header + "\x02\x0a\x01\x01m\x01t\x01\x63\x70\x00\x01", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := scanModule([]byte(tt.in))
			if tt.wantErr {
				if !errors.Is(err, errScan) {
					t.Fatalf("got %+v, %v, want an error matching %v", got, err, errScan)
				}
				return
			}
			if err != nil {
				t.Fatalf("got error %v, want none", err)
			}
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}
