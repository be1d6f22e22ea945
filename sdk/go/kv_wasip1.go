//go:build wasip1

package cloister

import (
	"encoding/binary"
	"unsafe"
)

//go:wasmimport cloister kv_get
func hostKVGet(key unsafe.Pointer, keyLen int32, buf unsafe.Pointer, bufCap int32) int32

//go:wasmimport cloister kv_put
func hostKVPut(key unsafe.Pointer, keyLen int32, val unsafe.Pointer, valLen int32) int32

//go:wasmimport cloister kv_delete
func hostKVDelete(key unsafe.Pointer, keyLen int32) int32

//go:wasmimport cloister kv_cas
func hostKVCAS(key unsafe.Pointer, keyLen int32, old unsafe.Pointer, oldLen int32, val unsafe.Pointer, valLen int32) int32

//go:wasmimport cloister kv_list
func hostKVList(prefix unsafe.Pointer, prefixLen int32, start unsafe.Pointer, startLen int32, buf unsafe.Pointer, bufCap int32) int32

// Host codes (docs/reactor-abi.md).
const (
	kvNotFound    = -1
	kvInvalid     = -2
	kvTooLarge    = -3
	kvQuota       = -4
	kvDenied      = -5
	kvBufferSmall = -6
)

func kvErr(code int32) error {
	switch code {
	case kvInvalid, kvBufferSmall:
		return ErrStateInvalid
	case kvTooLarge:
		return ErrStateTooLarge
	case kvQuota:
		return ErrStateQuota
	case kvDenied:
		return ErrStateDenied
	}
	return ErrStateFailed
}

func ptr(b []byte) unsafe.Pointer { return unsafe.Pointer(unsafe.SliceData(b)) }

// length returns len(b) as an i32, or -1 for nil (absent) when absent is
// allowed; a slice too long for the ABI becomes a length the host refuses.
func length(b []byte) int32 {
	if len(b) > 1<<31-1 {
		return -2
	}
	return int32(len(b))
}

func kvGet(key []byte) ([]byte, bool, error) {
	buf := make([]byte, 256)
	for {
		n := hostKVGet(ptr(key), length(key), ptr(buf), int32(len(buf)))
		switch {
		case n == kvNotFound:
			return nil, false, nil
		case n < 0:
			return nil, false, kvErr(n)
		case int(n) <= len(buf):
			return buf[:n:n], true, nil
		}
		buf = make([]byte, n)
	}
}

func kvPut(key, value []byte) error {
	if n := hostKVPut(ptr(key), length(key), ptr(value), length(value)); n != 0 {
		return kvErr(n)
	}
	return nil
}

func kvDelete(key []byte) (bool, error) {
	n := hostKVDelete(ptr(key), length(key))
	if n < 0 {
		return false, kvErr(n)
	}
	return n == 1, nil
}

func kvCAS(key, oldValue, newValue []byte) (bool, error) {
	oldLen, newLen := length(oldValue), length(newValue)
	if oldValue == nil {
		oldLen = -1
	}
	if newValue == nil {
		newLen = -1
	}
	n := hostKVCAS(ptr(key), length(key), ptr(oldValue), oldLen, ptr(newValue), newLen)
	if n < 0 {
		return false, kvErr(n)
	}
	return n == 1, nil
}

// kvList returns the next page of keys after start.
func kvList(prefix, start []byte) ([][]byte, error) {
	buf := make([]byte, 16<<10)
	n := hostKVList(ptr(prefix), length(prefix), ptr(start), length(start), ptr(buf), int32(len(buf)))
	if n < 0 {
		return nil, kvErr(n)
	}
	if int(n) > len(buf) {
		return nil, ErrStateFailed
	}
	var keys [][]byte
	for b := buf[:n]; len(b) > 0; {
		if len(b) < 4 {
			return nil, ErrStateFailed
		}
		l := binary.LittleEndian.Uint32(b)
		if uint64(l) > uint64(len(b)-4) {
			return nil, ErrStateFailed
		}
		keys = append(keys, b[4:4+l:4+l])
		b = b[4+l:]
	}
	return keys, nil
}
