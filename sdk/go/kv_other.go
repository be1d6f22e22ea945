//go:build !wasip1

package cloister

import (
	"bytes"
	"slices"
	"sync"
)

// On the host the state is an in-memory map, for unit tests with Call.
var mem struct {
	sync.Mutex
	m map[string][]byte
}

// ResetKV empties the in-memory state that KV functions use outside wasip1.
// It does nothing useful in a wasip1 build, where it does not exist.
func ResetKV() {
	mem.Lock()
	defer mem.Unlock()
	mem.m = nil
}

func checkKey(key []byte) error {
	if len(key) == 0 || len(key) > 512 {
		return ErrStateInvalid
	}
	return nil
}

func kvGet(key []byte) ([]byte, bool, error) {
	if err := checkKey(key); err != nil {
		return nil, false, err
	}
	mem.Lock()
	defer mem.Unlock()
	v, ok := mem.m[string(key)]
	return slices.Clone(v), ok, nil
}

func kvPut(key, value []byte) error {
	if err := checkKey(key); err != nil {
		return err
	}
	mem.Lock()
	defer mem.Unlock()
	if mem.m == nil {
		mem.m = map[string][]byte{}
	}
	mem.m[string(key)] = append([]byte{}, value...)
	return nil
}

func kvDelete(key []byte) (bool, error) {
	if err := checkKey(key); err != nil {
		return false, err
	}
	mem.Lock()
	defer mem.Unlock()
	_, ok := mem.m[string(key)]
	delete(mem.m, string(key))
	return ok, nil
}

func kvCAS(key, oldValue, newValue []byte) (bool, error) {
	if err := checkKey(key); err != nil {
		return false, err
	}
	mem.Lock()
	defer mem.Unlock()
	cur, ok := mem.m[string(key)]
	if ok != (oldValue != nil) || (ok && !bytes.Equal(cur, oldValue)) {
		return false, nil
	}
	if newValue == nil {
		delete(mem.m, string(key))
		return true, nil
	}
	if mem.m == nil {
		mem.m = map[string][]byte{}
	}
	mem.m[string(key)] = append([]byte{}, newValue...)
	return true, nil
}

func kvList(prefix, start []byte) ([][]byte, error) {
	mem.Lock()
	defer mem.Unlock()
	var keys [][]byte
	for k := range mem.m {
		if bytes.HasPrefix([]byte(k), prefix) && bytes.Compare([]byte(k), start) > 0 {
			keys = append(keys, []byte(k))
		}
	}
	slices.SortFunc(keys, bytes.Compare)
	if len(keys) > 100 {
		keys = keys[:100]
	}
	return keys, nil
}
