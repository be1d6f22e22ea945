package instrument

import (
	"fmt"
	"math"
)

// Encode returns the binary encoding of m: the header, then each non-empty
// section in the order the binary format requires, with the shortest
// LEB128 encoding of every count, size and decoded field. Bytes kept raw
// (constant expressions, function bodies, the element and data sections)
// are copied as they are. Encoding is deterministic: the same Module gives
// the same bytes.
//
// Encode checks the consistency the binary format itself requires
// (a body for every function, a data count matching the data section);
// whether the module is valid is for wazero to say.
func (m *Module) Encode() ([]byte, error) {
	if len(m.Funcs) != len(m.Code) {
		return nil, fmt.Errorf("encoding module: %d functions but %d bodies", len(m.Funcs), len(m.Code))
	}
	if m.HasDataCount && m.DataCount != m.NumData {
		return nil, fmt.Errorf("encoding module: data count %d but %d data segments", m.DataCount, m.NumData)
	}
	size := len(header) + len(m.Elements) + len(m.Data) + 64
	for i := range m.Code {
		size += len(m.Code[i].Expr) + 8
	}
	out := make([]byte, 0, size)
	out = append(out, header...)
	var p []byte // the payload of the section being encoded

	section := func(id byte) error {
		if len(p) > math.MaxUint32 {
			return fmt.Errorf("encoding module: section %d is %d bytes, over 4 GiB", id, len(p))
		}
		out = append(out, id)
		out = AppendU32(out, uint32(len(p)))
		out = append(out, p...)
		p = p[:0]
		return nil
	}
	vec := func(n int) bool {
		p = AppendU32(p[:0], uint32(n))
		return n > 0
	}

	if vec(len(m.Types)) {
		for _, t := range m.Types {
			p = append(p, 0x60)
			p = appendValTypes(p, t.Params)
			p = appendValTypes(p, t.Results)
		}
		if err := section(SectionType); err != nil {
			return nil, err
		}
	}
	if vec(len(m.Imports)) {
		for _, im := range m.Imports {
			p = appendName(p, im.Module)
			p = appendName(p, im.Name)
			p = append(p, byte(im.Kind))
			switch im.Kind {
			case KindFunc:
				p = AppendU32(p, im.Func)
			case KindTable:
				p = appendTableType(p, im.Table)
			case KindMemory:
				p = appendLimits(p, im.Memory)
			case KindGlobal:
				p = appendGlobalType(p, im.Global)
			default:
				return nil, fmt.Errorf("encoding module: import %q %q has unknown kind %#x", im.Module, im.Name, byte(im.Kind))
			}
		}
		if err := section(SectionImport); err != nil {
			return nil, err
		}
	}
	if vec(len(m.Funcs)) {
		for _, t := range m.Funcs {
			p = AppendU32(p, t)
		}
		if err := section(SectionFunction); err != nil {
			return nil, err
		}
	}
	if vec(len(m.Tables)) {
		for _, t := range m.Tables {
			p = appendTableType(p, t)
		}
		if err := section(SectionTable); err != nil {
			return nil, err
		}
	}
	if vec(len(m.Memories)) {
		for _, l := range m.Memories {
			p = appendLimits(p, l)
		}
		if err := section(SectionMemory); err != nil {
			return nil, err
		}
	}
	if vec(len(m.Globals)) {
		for _, g := range m.Globals {
			p = appendGlobalType(p, g.Type)
			p = append(p, g.Init...)
		}
		if err := section(SectionGlobal); err != nil {
			return nil, err
		}
	}
	if vec(len(m.Exports)) {
		for _, e := range m.Exports {
			p = appendName(p, e.Name)
			p = append(p, byte(e.Kind))
			p = AppendU32(p, e.Index)
		}
		if err := section(SectionExport); err != nil {
			return nil, err
		}
	}
	if m.HasStart {
		p = AppendU32(p[:0], m.Start)
		if err := section(SectionStart); err != nil {
			return nil, err
		}
	}
	if m.Elements != nil {
		p = append(p[:0], m.Elements...)
		if err := section(SectionElement); err != nil {
			return nil, err
		}
	}
	if m.HasDataCount {
		p = AppendU32(p[:0], m.DataCount)
		if err := section(SectionDataCount); err != nil {
			return nil, err
		}
	}
	if vec(len(m.Code)) {
		var body []byte
		for i := range m.Code {
			b := &m.Code[i]
			body = AppendU32(body[:0], uint32(len(b.Locals)))
			for _, g := range b.Locals {
				body = AppendU32(body, g.Count)
				body = append(body, byte(g.Type))
			}
			p = AppendU32(p, uint32(len(body)+len(b.Expr)))
			p = append(p, body...)
			p = append(p, b.Expr...)
		}
		if err := section(SectionCode); err != nil {
			return nil, err
		}
	}
	if m.Data != nil {
		p = append(p[:0], m.Data...)
		if err := section(SectionData); err != nil {
			return nil, err
		}
	}
	return out, nil
}
