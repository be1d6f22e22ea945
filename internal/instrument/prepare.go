package instrument

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// GlobalPrefix is the export name prefix of the globals the pass exports.
const GlobalPrefix = "__cloister_global_"

// Info describes what the sandbox must know to reset an instance exactly.
type Info struct {
	// Globals are the module's own mutable globals (not imported), each
	// exported by the pass under GlobalPrefix + decimal global index, in
	// ascending index order.
	Globals []Global
	// MutatesTables is true if the code contains table.set, table.grow,
	// table.fill, table.copy, table.init or elem.drop.
	MutatesTables bool
	// DropsData is true if the code contains data.drop.
	DropsData bool
	// MemoryGrows is true if the code contains memory.grow.
	MemoryGrows bool
}

// Global is a mutable global the module defines, and the name Prepare
// exports it under.
type Global struct {
	// Index is the global's index in the global index space (imported
	// globals first).
	Index uint32
	// Export is GlobalPrefix + the decimal Index.
	Export string
	// Type is the global's value type.
	Type ValType
}

// GlobalExportName returns the name Prepare exports global idx under.
func GlobalExportName(idx uint32) string {
	return GlobalPrefix + strconv.FormatUint(uint64(idx), 10)
}

// Prepare rewrites wasm so that every mutable global the module defines is
// exported under GlobalExportName (existing exports are kept; a global may
// be exported under several names), and reports Info. The output is valid,
// behaves exactly as the input, and is deterministic (same input, same
// bytes); Prepare of its own output returns the same bytes and Info.
// Custom sections are dropped.
//
// Errors wrap ErrMalformed (the input does not decode), ErrLimit,
// ErrReserved (the input exports a name under GlobalPrefix that Prepare
// would not have added itself) or ErrInvalid (wazero refuses the module),
// or are ctx's error.
func Prepare(ctx context.Context, wasm []byte) ([]byte, *Info, error) {
	out, info, _, err := Rewrite(ctx, wasm, Options{})
	return out, info, err
}

// Options choose what Rewrite does.
type Options struct {
	// Metered adds instruction metering and fuel (Meter) after the
	// globals are exported: PrepareMetered.
	Metered bool
	// CallerCompiles leaves out the last step of the pass, compiling its
	// output with wazero's interpreter, for a caller that compiles the
	// output with wazero itself at once and treats a refusal as an invalid
	// module, as the sandbox does. wazero validates every module it
	// compiles, in full and in either engine, so the guarantee stands: no
	// output that wazero refuses ever runs. For a large module the
	// interpreter's compile is most of the pass's time (two thirds for a
	// 3.3 MB Go module) and all of it is done again by the caller.
	CallerCompiles bool
}

// Rewrite is Prepare, or PrepareMetered if opts.Metered, without the
// final validation if opts.CallerCompiles. The MeterInfo is nil unless
// opts.Metered. Errors are those of Prepare and PrepareMetered.
func Rewrite(ctx context.Context, wasm []byte, opts Options) ([]byte, *Info, *MeterInfo, error) {
	m, err := Decode(ctx, wasm)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("decoding module: %w", err)
	}
	info, err := ExportMutableGlobals(m)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("exporting globals: %w", err)
	}
	if err := ScanCode(ctx, m, info); err != nil {
		return nil, nil, nil, fmt.Errorf("scanning code: %w", err)
	}
	var mi *MeterInfo
	if opts.Metered {
		if mi, err = Meter(ctx, m); err != nil {
			return nil, nil, nil, fmt.Errorf("metering: %w", err)
		}
	}
	out, err := m.Encode()
	if err != nil {
		return nil, nil, nil, err
	}
	if opts.CallerCompiles {
		return out, info, mi, nil
	}
	if err := validate(ctx, out); err != nil {
		what := "prepared"
		if opts.Metered {
			what = "metered"
		}
		return nil, nil, nil, fmt.Errorf("validating the %s module: %w", what, err)
	}
	return out, info, mi, nil
}

// ExportMutableGlobals adds to m an export of every mutable global m
// defines that is not exported under its GlobalExportName yet, and returns
// an Info listing them (its code flags are left false: see ScanCode). An
// existing export whose name starts with GlobalPrefix must be exactly such
// an export, or the error wraps ErrReserved.
func ExportMutableGlobals(m *Module) (*Info, error) {
	imported := m.NumImported(KindGlobal)
	if uint64(imported)+uint64(len(m.Globals)) > math.MaxUint32 {
		return nil, fmt.Errorf("%w: %d globals", ErrMalformed, uint64(imported)+uint64(len(m.Globals)))
	}
	info := &Info{}
	for i, g := range m.Globals {
		if g.Type.Mutable {
			idx := imported + uint32(i)
			info.Globals = append(info.Globals, Global{Index: idx, Export: GlobalExportName(idx), Type: g.Type.Type})
		}
	}
	exported := make(map[uint32]bool)
	for _, e := range m.Exports {
		if !strings.HasPrefix(e.Name, GlobalPrefix) {
			continue
		}
		ours := e.Kind == KindGlobal && e.Name == GlobalExportName(e.Index) &&
			e.Index >= imported && uint64(e.Index-imported) < uint64(len(m.Globals)) &&
			m.Globals[e.Index-imported].Type.Mutable
		if !ours {
			return nil, fmt.Errorf("%w: export %q (%s %d)", ErrReserved, e.Name, e.Kind, e.Index)
		}
		exported[e.Index] = true
	}
	for _, g := range info.Globals {
		if !exported[g.Index] {
			m.Exports = append(m.Exports, Export{Name: g.Export, Kind: KindGlobal, Index: g.Index})
		}
	}
	return info, nil
}

// ScanCode sets info's code flags from the instructions of every function
// body of m.
func ScanCode(ctx context.Context, m *Module, info *Info) error {
	for i := range m.Code {
		if i%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		b := &m.Code[i]
		ir := newInstrReaderAt(b.Expr, b.Offset)
		for ir.Next() {
			switch ir.Instr().Op {
			case OpTableSet, OpTableGrow, OpTableFill, OpTableCopy, OpTableInit, OpElemDrop:
				info.MutatesTables = true
			case OpDataDrop:
				info.DropsData = true
			case OpMemoryGrow:
				info.MemoryGrows = true
			}
		}
		if err := ir.Err(); err != nil {
			return fmt.Errorf("function body %d: %w", i, err)
		}
	}
	return nil
}
