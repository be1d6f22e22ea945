package instrument

import (
	"context"
	"fmt"
)

// Section ids (https://webassembly.github.io/spec/core/binary/modules.html#sections).
const (
	SectionCustom    = 0
	SectionType      = 1
	SectionImport    = 2
	SectionFunction  = 3
	SectionTable     = 4
	SectionMemory    = 5
	SectionGlobal    = 6
	SectionExport    = 7
	SectionStart     = 8
	SectionElement   = 9
	SectionCode      = 10
	SectionData      = 11
	SectionDataCount = 12
)

// sectionRank orders the non-custom sections as the binary format requires
// them to appear: the data count section comes between the element and code
// sections.
var sectionRank = [...]int{
	SectionType: 1, SectionImport: 2, SectionFunction: 3, SectionTable: 4,
	SectionMemory: 5, SectionGlobal: 6, SectionExport: 7, SectionStart: 8,
	SectionElement: 9, SectionDataCount: 10, SectionCode: 11, SectionData: 12,
}

// header is the magic number and version 1 of the binary format.
const header = "\x00asm\x01\x00\x00\x00"

// MaxFunctionLocals bounds the locals one function body declares, as
// browsers do (V8 and SpiderMonkey allow 50,000). Locals are run-length
// encoded and wazero allocates per declared local, so a few bytes could
// otherwise ask for four billion of them. A module over it fails with
// ErrLimit.
const MaxFunctionLocals = 50_000

// Import is an entry of the import section. Which of Func, Table, Memory
// and Global is meaningful depends on Kind.
type Import struct {
	Module, Name string
	Kind         ExternKind
	Func         uint32 // type index
	Table        TableType
	Memory       Limits
	Global       GlobalType
}

// Export is an entry of the export section.
type Export struct {
	Name  string
	Kind  ExternKind
	Index uint32
}

// GlobalDef is a global the module defines: its type and its initializer.
type GlobalDef struct {
	Type GlobalType
	// Init is the constant expression, its final end included.
	Init []byte
}

// LocalGroup declares Count locals of one type.
type LocalGroup struct {
	Count uint32
	Type  ValType
}

// Body is the code of one function the module defines.
type Body struct {
	Locals []LocalGroup
	// Expr is the instruction sequence, its final end included. Decode it
	// with NewInstrReader.
	Expr []byte
	// Offset is the module offset of Expr in the decoded module (0 for a
	// body a pass built), for error messages.
	Offset int
}

// NumLocals returns the number of locals the body declares (parameters
// not included).
func (b *Body) NumLocals() uint64 {
	var n uint64
	for _, g := range b.Locals {
		n += uint64(g.Count)
	}
	return n
}

// Module is a decoded WebAssembly 2.0 binary module.
//
// The sections a pass may change are decoded into fields; the element and
// data sections, which no pass changes, are checked and kept as raw bytes.
// A decoded Module aliases the bytes it was decoded from (names excepted):
// do not modify them while the Module is in use. Custom sections are not
// kept.
type Module struct {
	Types    []FuncType
	Imports  []Import
	Funcs    []uint32 // the type index of each defined function
	Tables   []TableType
	Memories []Limits
	Globals  []GlobalDef
	Exports  []Export

	Start    uint32 // the start function, if HasStart
	HasStart bool

	// Elements is the payload of the element section (its segment count
	// included), or nil; NumElements is its segment count.
	Elements    []byte
	NumElements uint32

	// DataCount is the data count section's value, if HasDataCount.
	DataCount    uint32
	HasDataCount bool

	Code []Body

	// Data is the payload of the data section (its segment count
	// included), or nil; NumData is its segment count.
	Data    []byte
	NumData uint32
}

// NumImported returns the number of imports of a kind: the index of the
// first definition of that kind in its index space.
func (m *Module) NumImported(kind ExternKind) uint32 {
	var n uint32
	for i := range m.Imports {
		if m.Imports[i].Kind == kind {
			n++
		}
	}
	return n
}

// GlobalTypes returns the type of every global in the global index space:
// imported globals first, then defined ones.
func (m *Module) GlobalTypes() []GlobalType {
	var ts []GlobalType
	for i := range m.Imports {
		if m.Imports[i].Kind == KindGlobal {
			ts = append(ts, m.Imports[i].Global)
		}
	}
	for i := range m.Globals {
		ts = append(ts, m.Globals[i].Type)
	}
	return ts
}

// FuncTypeOf returns the type of function idx in the function index space,
// or false if there is no such function or type.
func (m *Module) FuncTypeOf(idx uint32) (FuncType, bool) {
	var typeIdx uint32
	found := false
	for i := range m.Imports {
		if m.Imports[i].Kind != KindFunc {
			continue
		}
		if idx == 0 {
			typeIdx, found = m.Imports[i].Func, true
			break
		}
		idx--
	}
	if !found {
		if uint64(idx) >= uint64(len(m.Funcs)) {
			return FuncType{}, false
		}
		typeIdx = m.Funcs[idx]
	}
	if uint64(typeIdx) >= uint64(len(m.Types)) {
		return FuncType{}, false
	}
	return m.Types[typeIdx], true
}

// Decode decodes a binary module. Every section is checked against the
// binary format of WebAssembly 2.0 (https://webassembly.github.io/spec/core/binary/),
// every instruction of every function body included, so that a pass can
// trust the structure it walks. Types and indices are not validated: that
// is wazero's job (see validate). Errors wrap ErrMalformed, or ErrLimit
// for a body over MaxFunctionLocals.
//
// Decode never panics, and allocates in proportion to len(wasm): every
// count is checked against the bytes left before anything is allocated
// from it. It checks ctx between function bodies.
func Decode(ctx context.Context, wasm []byte) (*Module, error) {
	r := &reader{b: wasm}
	if string(r.bytes(len(header))) != header {
		return nil, fmt.Errorf("%w: not a WebAssembly binary module of version 1 (bad magic or version)", ErrMalformed)
	}
	m := &Module{}
	last := 0 // rank of the last non-custom section
	for !r.done() {
		id := r.byte()
		n := r.size()
		s := r.sub(n)
		if r.err != nil {
			return nil, r.err
		}
		if id == SectionCustom {
			s.name() // the name must be well-formed; the rest is opaque
			if s.err != nil {
				return nil, fmt.Errorf("custom section: %w", s.err)
			}
			continue
		}
		if int(id) >= len(sectionRank) || sectionRank[id] == 0 {
			return nil, fmt.Errorf("%w: at offset %d: unknown section id %d", ErrMalformed, s.base-1, id)
		}
		if sectionRank[id] <= last {
			return nil, fmt.Errorf("%w: at offset %d: section %d out of order or repeated", ErrMalformed, s.base-1, id)
		}
		last = sectionRank[id]
		if err := m.decodeSection(ctx, id, s); err != nil {
			return nil, fmt.Errorf("section %d: %w", id, err)
		}
		if !s.done() {
			s.failf("%d bytes left over at the end of the section", s.left())
			return nil, fmt.Errorf("section %d: %w", id, s.err)
		}
	}
	if len(m.Funcs) != len(m.Code) {
		return nil, fmt.Errorf("%w: %d functions declared but %d bodies", ErrMalformed, len(m.Funcs), len(m.Code))
	}
	if m.HasDataCount && m.DataCount != m.NumData {
		return nil, fmt.Errorf("%w: data count section says %d segments, data section has %d", ErrMalformed, m.DataCount, m.NumData)
	}
	return m, nil
}

func (m *Module) decodeSection(ctx context.Context, id byte, r *reader) error {
	switch id {
	case SectionType:
		n := r.count(3) // 0x60, and two vector lengths
		if r.err == nil {
			m.Types = make([]FuncType, n)
		}
		for i := 0; i < n && r.err == nil; i++ {
			if form := r.byte(); r.err == nil && form != 0x60 {
				r.off--
				r.failf("type form %#x is not a function type", form)
				break
			}
			m.Types[i] = FuncType{Params: r.valTypes(), Results: r.valTypes()}
		}
	case SectionImport:
		n := r.count(4) // two names, a kind and at least one byte
		if r.err == nil {
			m.Imports = make([]Import, n)
		}
		for i := 0; i < n && r.err == nil; i++ {
			im := &m.Imports[i]
			im.Module = r.name()
			im.Name = r.name()
			im.Kind = ExternKind(r.byte())
			switch im.Kind {
			case KindFunc:
				im.Func = r.u32()
			case KindTable:
				im.Table = r.tableType()
			case KindMemory:
				im.Memory = r.limits()
			case KindGlobal:
				im.Global = r.globalType()
			default:
				r.off--
				r.failf("unknown import kind %#x", byte(im.Kind))
			}
		}
	case SectionFunction:
		n := r.count(1)
		if r.err == nil {
			m.Funcs = make([]uint32, n)
		}
		for i := 0; i < n && r.err == nil; i++ {
			m.Funcs[i] = r.u32()
		}
	case SectionTable:
		n := r.count(3)
		if r.err == nil {
			m.Tables = make([]TableType, n)
		}
		for i := 0; i < n && r.err == nil; i++ {
			m.Tables[i] = r.tableType()
		}
	case SectionMemory:
		n := r.count(2)
		if r.err == nil {
			m.Memories = make([]Limits, n)
		}
		for i := 0; i < n && r.err == nil; i++ {
			m.Memories[i] = r.limits()
		}
	case SectionGlobal:
		n := r.count(3) // type, mutability, end
		if r.err == nil {
			m.Globals = make([]GlobalDef, n)
		}
		for i := 0; i < n && r.err == nil; i++ {
			m.Globals[i] = GlobalDef{Type: r.globalType(), Init: r.constExpr()}
		}
	case SectionExport:
		n := r.count(3)
		if r.err == nil {
			m.Exports = make([]Export, n)
		}
		for i := 0; i < n && r.err == nil; i++ {
			e := &m.Exports[i]
			e.Name = r.name()
			e.Kind = ExternKind(r.byte())
			if r.err == nil && e.Kind > KindGlobal {
				r.off--
				r.failf("unknown export kind %#x", byte(e.Kind))
			}
			e.Index = r.u32()
		}
	case SectionStart:
		m.Start, m.HasStart = r.u32(), true
	case SectionElement:
		start := r.off
		n := r.count(2)
		for i := 0; i < n && r.err == nil; i++ {
			r.elementSegment()
		}
		m.Elements, m.NumElements = r.b[start:r.off:r.off], uint32(n)
	case SectionDataCount:
		m.DataCount, m.HasDataCount = r.u32(), true
	case SectionCode:
		n := r.count(2) // a size, and a body of at least one byte
		if r.err == nil {
			m.Code = make([]Body, n)
		}
		for i := 0; i < n && r.err == nil; i++ {
			if i%1024 == 0 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			if err := r.body(&m.Code[i]); err != nil {
				return fmt.Errorf("function body %d: %w", i, err)
			}
		}
	case SectionData:
		start := r.off
		n := r.count(2)
		for i := 0; i < n && r.err == nil; i++ {
			r.dataSegment()
		}
		m.Data, m.NumData = r.b[start:r.off:r.off], uint32(n)
	}
	if r.err != nil {
		return r.err
	}
	return nil
}

// elementSegment reads one element segment, whose encoding depends on its
// flags (https://webassembly.github.io/spec/core/binary/modules.html#element-section).
func (r *reader) elementSegment() {
	funcIndices := func() {
		n := r.count(1)
		for i := 0; i < n && r.err == nil; i++ {
			r.u32()
		}
	}
	exprs := func() {
		n := r.count(1)
		for i := 0; i < n && r.err == nil; i++ {
			r.constExpr()
		}
	}
	elemKind := func() {
		if k := r.byte(); r.err == nil && k != 0x00 {
			r.off--
			r.failf("unknown element kind %#x", k)
		}
	}
	switch flags := r.u32(); flags {
	case 0: // active, table 0, function indices
		r.constExpr()
		funcIndices()
	case 1, 3: // passive or declarative, function indices
		elemKind()
		funcIndices()
	case 2: // active, explicit table, function indices
		r.u32()
		r.constExpr()
		elemKind()
		funcIndices()
	case 4: // active, table 0, expressions
		r.constExpr()
		exprs()
	case 5, 7: // passive or declarative, expressions
		r.refType()
		exprs()
	case 6: // active, explicit table, expressions
		r.u32()
		r.constExpr()
		r.refType()
		exprs()
	default:
		if r.err == nil {
			r.failf("unknown element segment flags %d", flags)
		}
	}
}

// dataSegment reads one data segment.
func (r *reader) dataSegment() {
	switch flags := r.u32(); flags {
	case 0: // active, memory 0
		r.constExpr()
	case 1: // passive
	case 2: // active, explicit memory
		r.u32()
		r.constExpr()
	default:
		if r.err == nil {
			r.failf("unknown data segment flags %d", flags)
		}
		return
	}
	r.bytes(r.size())
}

// body reads one entry of the code section into b, decoding every
// instruction.
func (r *reader) body(b *Body) error {
	s := r.sub(r.size())
	if r.err != nil {
		return r.err
	}
	n := s.count(2)
	if s.err == nil && n > 0 {
		b.Locals = make([]LocalGroup, n)
	}
	var total uint64
	for i := 0; i < n && s.err == nil; i++ {
		b.Locals[i] = LocalGroup{Count: s.u32(), Type: s.valType()}
		total += uint64(b.Locals[i].Count)
	}
	if s.err != nil {
		return s.err
	}
	if total > MaxFunctionLocals {
		return fmt.Errorf("%w: %d locals, at most %d allowed", ErrLimit, total, MaxFunctionLocals)
	}
	b.Offset = s.pos()
	b.Expr = s.b[s.off:len(s.b):len(s.b)]
	ir := newInstrReaderAt(b.Expr, b.Offset)
	for ir.Next() {
	}
	if err := ir.Err(); err != nil {
		return err
	}
	if ir.Len() != len(b.Expr) {
		return fmt.Errorf("%w: at offset %d: %d bytes after the final end", ErrMalformed, b.Offset+ir.Len(), len(b.Expr)-ir.Len())
	}
	return nil
}
