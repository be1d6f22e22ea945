package sandbox

import (
	"errors"
	"fmt"
)

// MaxTableEntries bounds every table of a module, declared and grown. A
// table entry costs the host 8 bytes outside linear memory, so without a
// bound a guest could grow a table to 2^32 entries (32 GiB) whatever its
// memory limit. A declared minimum above it fails Compile with
// ErrMemoryLimit; a declared maximum above it, or none, is lowered to it,
// so table.grow past it fails in the guest as the specification allows.
const MaxTableEntries = 1 << 20

// maxFunctionLocals bounds the locals of one function, as browsers do
// (V8 and SpiderMonkey allow 50,000). wazero allocates per declared local,
// and locals are run-length encoded, so six bytes could otherwise ask for
// four billion of them.
const maxFunctionLocals = 50_000

// Errors of prepareModule.
var (
	// errMalformed means the binary is not well-formed WebAssembly, or uses
	// an encoding this package does not accept.
	errMalformed = errors.New("malformed module")
	// errTableLimit means a table's declared minimum is over
	// MaxTableEntries.
	errTableLimit = errors.New("table over the entry limit")
)

// moduleShape is what prepareModule learns about a module.
type moduleShape struct {
	// hasMemory is true if the module defines or imports a memory.
	hasMemory bool
	// memoryMin is the declared minimum of that memory, in pages.
	memoryMin uint32
	// nonFuncImports counts the imports that are not functions: tables,
	// memories, globals and tags.
	nonFuncImports int
	// compileWork is the module's estimated compile work (funcCost), and
	// maxDepth the deepest nesting of its functions.
	compileWork float64
	maxDepth    int
}

// Binary format constants, from the WebAssembly core specification
// (https://webassembly.github.io/spec/core/binary/modules.html).
const (
	sectionCustom    = 0
	sectionType      = 1
	sectionImport    = 2
	sectionFunction  = 3
	sectionTable     = 4
	sectionMemory    = 5
	sectionGlobal    = 6
	sectionExport    = 7
	sectionStart     = 8
	sectionElement   = 9
	sectionCode      = 10
	sectionData      = 11
	sectionDataCount = 12
	sectionTag       = 13

	importFunc   = 0x00
	importTable  = 0x01
	importMemory = 0x02
	importGlobal = 0x03
	importTag    = 0x04

	refNullable    = 0x63 // (ref null ht): a heap type follows
	refNonNullable = 0x64 // (ref ht): a heap type follows

	wasmHeader = "\x00asm\x01\x00\x00\x00"
)

// prepareModule checks the structure of a binary module before wazero
// decodes it, and returns a copy fit to hand to wazero.
//
// wazero v1.12's decoder sizes its allocations from counts read from the
// binary without checking them against the input, so a few dozen bytes can
// make it allocate tens of gigabytes and kill the process (a fatal error,
// which recover cannot catch). prepareModule walks every section and checks
// that every vector count and byte length fits in what is left of its
// section, so that decoding costs memory in proportion to the module's
// size. It also removes custom sections (they carry no semantics, and the
// name section is one more decoder to attack), bounds tables to
// MaxTableEntries and functions to maxFunctionLocals.
//
// It also bounds what the module costs to compile (compile_cost.go): it
// walks the instructions of every function body, and refuses with
// errCompileLimit a module over MaxNestingDepth, MaxModuleLocals or its
// compile work budget, before any compiler sees it.
//
// It is not a validator: wazero has the last word on validity. It only has
// to parse every module wazero would accept and the instrument pass can
// rewrite, and to never let through a count wazero would trust. It never
// panics.
func prepareModule(b []byte) ([]byte, moduleShape, error) {
	var shape moduleShape
	var cost compileCost
	r := &wasmReader{b: b}
	if string(r.bytes(len(wasmHeader))) != wasmHeader {
		return nil, shape, fmt.Errorf("%w: not a WebAssembly 1.0 binary (bad magic or version)", errMalformed)
	}
	out := make([]byte, 0, len(b))
	out = append(out, wasmHeader...)
	for !r.done() && r.err == nil {
		start := r.off
		id := r.byte()
		size := r.count()
		body := &wasmReader{b: r.bytes(size)}
		if r.err != nil {
			return nil, shape, fmt.Errorf("%w: section %d: %w", errMalformed, id, r.err)
		}
		raw := b[start:r.off]
		var err error
		switch id {
		case sectionCustom:
			continue // dropped
		case sectionType:
			checkTypes(body, &cost)
		case sectionImport:
			checkImports(body, &shape)
		case sectionFunction:
			body.skipVector(func() { cost.funcTypes = append(cost.funcTypes, body.leb32()) })
		case sectionTable:
			var tables []byte
			if tables, err = boundTables(body); err == nil {
				raw = appendSection(nil, id, tables)
			}
		case sectionMemory:
			body.skipVector(func() {
				shape.hasMemory = true
				shape.memoryMin = max(shape.memoryMin, body.limits().min)
			})
		case sectionGlobal:
			body.skipVector(func() {
				body.skipValType()
				body.byte() // mutability
				body.skipConstExpr()
			})
		case sectionExport:
			body.skipVector(func() {
				body.skipName()
				body.byte() // kind
				body.skipLEB(5)
			})
		case sectionStart, sectionDataCount:
			body.skipLEB(5)
		case sectionElement:
			body.skipVector(func() { checkElementSegment(body) })
		case sectionCode:
			cost.startCode(len(body.b))
			err = checkCodeSection(body, &cost)
		case sectionData:
			body.skipVector(func() { checkDataSegment(body) })
		case sectionTag:
			body.skipVector(func() {
				body.byte() // attribute
				body.skipLEB(5)
			})
		default:
			return nil, shape, fmt.Errorf("%w: unknown section id %d", errMalformed, id)
		}
		if errors.Is(err, errCompileLimit) {
			return nil, shape, err // always the code section
		}
		if err != nil {
			return nil, shape, fmt.Errorf("section %d: %w", id, err)
		}
		if body.err == nil && !body.done() {
			body.err = fmt.Errorf("%d bytes left over", len(body.b)-body.off)
		}
		if body.err != nil {
			return nil, shape, fmt.Errorf("%w: section %d: %w", errMalformed, id, body.err)
		}
		out = append(out, raw...)
	}
	if r.err != nil {
		return nil, shape, fmt.Errorf("%w: %w", errMalformed, r.err)
	}
	shape.compileWork, shape.maxDepth = cost.work, cost.maxDepth
	return out, shape, nil
}

// checkTypes reads a type section: function types, possibly in recursion
// groups (which wazero parses whatever its features). It notes each
// type's parameter count in cost.
func checkTypes(r *wasmReader, cost *compileCost) {
	funcType := func() {
		if form := r.byte(); r.err == nil && form != 0x60 {
			r.fail("type form %#x is not a function type", form)
			return
		}
		var params uint32
		r.skipVector(func() { // parameters
			params++
			r.skipValType()
		})
		r.skipVector(r.skipValType) // results
		cost.params = append(cost.params, params)
	}
	r.skipVector(func() {
		if r.peek() == 0x4e {
			r.byte()
			r.skipVector(funcType)
			return
		}
		funcType()
	})
}

// checkImports reads an import section, noting memories and the imports
// that are not functions.
func checkImports(r *wasmReader, shape *moduleShape) {
	r.skipVector(func() {
		r.skipName() // module
		r.skipName() // name
		switch kind := r.byte(); kind {
		case importFunc:
			r.skipLEB(5)
		case importTable:
			shape.nonFuncImports++
			r.table()
		case importMemory:
			shape.nonFuncImports++
			shape.hasMemory = true
			shape.memoryMin = max(shape.memoryMin, r.limits().min)
		case importGlobal:
			shape.nonFuncImports++
			r.skipValType()
			r.byte() // mutability
		case importTag:
			shape.nonFuncImports++
			r.byte() // attribute
			r.skipLEB(5)
		default:
			r.fail("unknown import kind %#x", kind)
		}
	})
}

// boundTables reads a table section and returns it re-encoded with every
// table's maximum at most MaxTableEntries.
func boundTables(r *wasmReader) ([]byte, error) {
	var out []byte
	n := r.count()
	out = appendLEB(out, uint32(n))
	for i := 0; i < n && r.err == nil; i++ {
		t := r.table()
		if r.err != nil {
			break
		}
		if t.limits.min > MaxTableEntries {
			return nil, fmt.Errorf("%w: table %d declares %d entries, limit is %d", errTableLimit, i, t.limits.min, MaxTableEntries)
		}
		tableMax := uint32(MaxTableEntries)
		if t.limits.hasMax && t.limits.max < tableMax {
			tableMax = t.limits.max
		}
		out = append(out, t.prefix...)
		out = append(out, 0x01|t.limits.flags&0x02) // has a maximum; keep the shared bit for wazero to refuse
		out = appendLEB(out, t.limits.min)
		out = appendLEB(out, tableMax)
		out = append(out, t.init...)
	}
	return out, nil // a read error is left in r for the caller
}

// checkElementSegment reads one element segment. Its encoding depends on
// its flags (https://webassembly.github.io/spec/core/binary/modules.html#element-section).
func checkElementSegment(r *wasmReader) {
	funcIndices := func() { r.skipVector(func() { r.skipLEB(5) }) }
	exprs := func() { r.skipVector(r.skipConstExpr) }
	switch flags := r.leb32(); flags {
	case 0:
		r.skipConstExpr()
		funcIndices()
	case 1, 3:
		r.byte() // element kind
		funcIndices()
	case 2:
		r.skipLEB(5) // table index
		r.skipConstExpr()
		r.byte() // element kind
		funcIndices()
	case 4:
		r.skipConstExpr()
		exprs()
	case 5, 7:
		r.skipValType()
		exprs()
	case 6:
		r.skipLEB(5) // table index
		r.skipConstExpr()
		r.skipValType()
		exprs()
	default:
		r.fail("unknown element segment flags %d", flags)
	}
}

// checkDataSegment reads one data segment.
func checkDataSegment(r *wasmReader) {
	switch flags := r.leb32(); flags {
	case 0:
		r.skipConstExpr()
	case 1:
	case 2:
		r.skipLEB(5) // memory index
		r.skipConstExpr()
	default:
		r.fail("unknown data segment flags %d", flags)
	}
	r.bytes(r.count())
}

// checkCodeSection reads a code section, checking every function body
// with checkCode. It returns an error wrapping errCompileLimit if the
// module is over a compile bound; read errors are left in r.
func checkCodeSection(r *wasmReader, cost *compileCost) error {
	n := r.count()
	for i := 0; i < n && r.err == nil; i++ {
		if err := checkCode(r, cost); err != nil {
			return err
		}
	}
	return nil
}

// checkCode reads one function body: its size, its locals, which must not
// add up to more than maxFunctionLocals, and its instructions, which cost
// checks against the compile bounds. A malformed body is left as an error
// in r; a bound exceeded is returned.
func checkCode(r *wasmReader, cost *compileCost) error {
	body := &wasmReader{b: r.bytes(r.count())}
	if r.err != nil {
		return nil
	}
	var locals uint64
	body.skipVector(func() {
		locals += uint64(body.leb32())
		body.skipValType()
		if locals > maxFunctionLocals {
			body.fail("more than %d locals in a function", maxFunctionLocals)
		}
	})
	if body.err != nil {
		r.err = body.err
		return nil
	}
	err := cost.addBody(body.b[body.off:], locals)
	if err != nil && !errors.Is(err, errCompileLimit) {
		r.err = err
		return nil
	}
	return err
}

// wasmReader reads the WebAssembly binary encoding from a byte slice. The
// first failure is kept in err; after it every method returns zero values
// and reads nothing, so callers check err only where they must.
type wasmReader struct {
	b   []byte
	off int
	err error
}

func (r *wasmReader) fail(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf(format, args...)
	}
}

func (r *wasmReader) done() bool { return r.off >= len(r.b) }

func (r *wasmReader) byte() byte {
	if r.err != nil {
		return 0
	}
	if r.off >= len(r.b) {
		r.fail("unexpected end at offset %d", r.off)
		return 0
	}
	c := r.b[r.off]
	r.off++
	return c
}

// peek returns the next byte without reading it, or 0 at the end.
func (r *wasmReader) peek() byte {
	if r.err != nil || r.off >= len(r.b) {
		return 0
	}
	return r.b[r.off]
}

func (r *wasmReader) bytes(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || n > len(r.b)-r.off {
		r.fail("%d bytes needed at offset %d, %d left", n, r.off, len(r.b)-r.off)
		return nil
	}
	p := r.b[r.off : r.off+n]
	r.off += n
	return p
}

// leb32 reads an unsigned LEB128 value of at most 32 bits.
func (r *wasmReader) leb32() uint32 {
	var v uint32
	for i := range 5 {
		c := r.byte()
		if r.err != nil {
			return 0
		}
		if i == 4 && c > 0x0f {
			r.fail("integer over 32 bits at offset %d", r.off-1)
			return 0
		}
		v |= uint32(c&0x7f) << (7 * i)
		if c&0x80 == 0 {
			return v
		}
	}
	return v // not reached: the fifth byte has no continuation bit
}

// skipLEB skips a LEB128 value of at most maxBytes bytes, signed or not.
func (r *wasmReader) skipLEB(maxBytes int) {
	for range maxBytes {
		if c := r.byte(); r.err != nil || c&0x80 == 0 {
			return
		}
	}
	r.fail("integer too long at offset %d", r.off)
}

// count reads a vector length or byte count, which must fit in the bytes
// left: every element takes at least one byte. This is the check that
// keeps wazero's allocations in proportion to the input.
func (r *wasmReader) count() int {
	n := r.leb32()
	if r.err != nil {
		return 0
	}
	if left := len(r.b) - r.off; uint64(n) > uint64(left) {
		r.fail("count %d at offset %d exceeds the %d bytes left", n, r.off, left)
		return 0
	}
	return int(n)
}

// skipVector reads a vector, calling elem for each element.
func (r *wasmReader) skipVector(elem func()) {
	n := r.count()
	for i := 0; i < n && r.err == nil; i++ {
		elem()
	}
}

// skipName skips a length-prefixed name.
func (r *wasmReader) skipName() {
	r.bytes(r.count())
}

// skipValType skips a value or reference type: one byte, or a
// (ref null? ht) prefix and its heap type.
func (r *wasmReader) skipValType() {
	if c := r.byte(); c == refNullable || c == refNonNullable {
		r.skipLEB(5) // s33 heap type
	}
}

// wasmLimits are the limits of a memory or table type.
type wasmLimits struct {
	flags    byte
	min, max uint32
	hasMax   bool
}

// limits reads a limits structure. Flags are "has a maximum" and "shared";
// anything else (64-bit memories, say) is refused, as wazero does.
func (r *wasmReader) limits() wasmLimits {
	var l wasmLimits
	l.flags = r.byte()
	if l.flags&^0x03 != 0 {
		r.fail("unknown limits flags %#x", l.flags)
		return l
	}
	l.min = r.leb32()
	if l.flags&0x01 != 0 {
		l.max, l.hasMax = r.leb32(), true
	}
	return l
}

// wasmTable is a table type as encoded, split where boundTables edits it.
type wasmTable struct {
	prefix []byte // optional 0x40 0x00 marker, then the reference type
	limits wasmLimits
	init   []byte // the initializer expression, if the marker is present
}

// table reads a table type, with its optional initializer expression.
func (r *wasmReader) table() wasmTable {
	var t wasmTable
	start := r.off
	hasInit := r.peek() == 0x40
	if hasInit {
		r.byte()
		if reserved := r.byte(); r.err == nil && reserved != 0x00 {
			r.fail("table marker followed by %#x, want 0x00", reserved)
		}
	}
	r.skipValType()
	if r.err != nil {
		return t
	}
	t.prefix = r.b[start:r.off]
	t.limits = r.limits()
	if hasInit {
		initStart := r.off
		r.skipConstExpr()
		if r.err == nil {
			t.init = r.b[initStart:r.off]
		}
	}
	return t
}

// skipConstExpr skips a constant expression, up to and including its end
// opcode. It knows the instructions wazero accepts in one.
func (r *wasmReader) skipConstExpr() {
	for r.err == nil {
		switch op := r.byte(); op {
		case 0x0b: // end
			return
		case 0x41: // i32.const
			r.skipLEB(5)
		case 0x42: // i64.const
			r.skipLEB(10)
		case 0x43: // f32.const
			r.bytes(4)
		case 0x44: // f64.const
			r.bytes(8)
		case 0x23, 0xd2: // global.get, ref.func
			r.skipLEB(5)
		case 0xd0: // ref.null
			switch r.peek() {
			case 0x70, 0x6f, 0x69: // func, extern, exn
				r.byte()
			default:
				r.skipLEB(5) // s33 heap type
			}
		case 0x6a, 0x6b, 0x6c, 0x7c, 0x7d, 0x7e: // extended-const arithmetic
		case 0xfd: // v128.const
			if sub := r.byte(); r.err == nil && sub != 0x0c {
				r.fail("vector opcode %#x in a constant expression", sub)
				return
			}
			r.bytes(16)
		default:
			if r.err == nil {
				r.fail("opcode %#x in a constant expression", op)
			}
		}
	}
}

// appendLEB appends v as unsigned LEB128.
func appendLEB(b []byte, v uint32) []byte {
	for v >= 0x80 {
		b = append(b, byte(v)|0x80)
		v >>= 7
	}
	return append(b, byte(v))
}

// appendSection appends a section with the given id and body.
func appendSection(b []byte, id byte, body []byte) []byte {
	b = append(b, id)
	b = appendLEB(b, uint32(len(body)))
	return append(b, body...)
}
