// Package sandboxtest has test doubles for the sandbox's interfaces.
package sandboxtest

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"sync"

	"github.com/cloister-faas/cloister/internal/sandbox"
)

// MapKV is a function's state (sandbox.KV) as a map, with the platform's
// key limit (1 to 512 bytes), an optional value limit, and an error that
// every operation returns while Fail is set. Its zero value is ready to use.
type MapKV struct {
	MaxValue int   // 0: no limit
	Fail     error // returned by every operation when set

	mu sync.Mutex
	m  map[string][]byte
}

var _ sandbox.KV = (*MapKV)(nil)

// SetFail sets the error every operation returns (nil: none).
func (k *MapKV) SetFail(err error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.Fail = err
}

func (k *MapKV) check(key []byte) error {
	if k.Fail != nil {
		return k.Fail
	}
	if len(key) == 0 || len(key) > 512 {
		return sandbox.ErrKVInvalid
	}
	return nil
}

// Get implements sandbox.KV.
func (k *MapKV) Get(_ context.Context, key []byte) ([]byte, bool, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.check(key); err != nil {
		return nil, false, err
	}
	v, ok := k.m[string(key)]
	return slices.Clone(v), ok, nil
}

// Put implements sandbox.KV.
func (k *MapKV) Put(_ context.Context, key, value []byte) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.check(key); err != nil {
		return err
	}
	if k.MaxValue > 0 && len(value) > k.MaxValue {
		return sandbox.ErrKVTooLarge
	}
	if k.m == nil {
		k.m = map[string][]byte{}
	}
	k.m[string(key)] = bytes.Clone(value)
	return nil
}

// Delete implements sandbox.KV.
func (k *MapKV) Delete(_ context.Context, key []byte) (bool, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.check(key); err != nil {
		return false, err
	}
	_, ok := k.m[string(key)]
	delete(k.m, string(key))
	return ok, nil
}

// CompareAndSwap implements sandbox.KV.
func (k *MapKV) CompareAndSwap(_ context.Context, key, oldValue []byte, oldPresent bool, newValue []byte, newPresent bool) (bool, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.check(key); err != nil {
		return false, err
	}
	cur, ok := k.m[string(key)]
	if ok != oldPresent || (ok && !bytes.Equal(cur, oldValue)) {
		return false, nil
	}
	if !newPresent {
		delete(k.m, string(key))
		return true, nil
	}
	if k.MaxValue > 0 && len(newValue) > k.MaxValue {
		return false, sandbox.ErrKVTooLarge
	}
	if k.m == nil {
		k.m = map[string][]byte{}
	}
	k.m[string(key)] = bytes.Clone(newValue)
	return true, nil
}

// List implements sandbox.KV.
func (k *MapKV) List(_ context.Context, prefix, start []byte, limit int) ([][]byte, bool, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.Fail != nil {
		return nil, false, k.Fail
	}
	var keys [][]byte
	for s := range k.m {
		if strings.HasPrefix(s, string(prefix)) && s > string(start) {
			keys = append(keys, []byte(s))
		}
	}
	slices.SortFunc(keys, bytes.Compare)
	if len(keys) > limit {
		return keys[:limit], true, nil
	}
	return keys, false, nil
}
