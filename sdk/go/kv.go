package cloister

import "errors"

// The function's state (docs/state.md): a private key-value store, sealed
// by the platform, that outlives requests. The manifest must grant it
// ("capabilities": {"state": true}); during package initialisation, and
// without the grant, every operation fails with [ErrStateDenied]. Keys are
// 1 to 512 bytes. Concurrent requests see each other's writes; use
// [KVCompareAndSwap] to update a value without losing a concurrent update.
//
// Outside wasip1 (go test on the host) the functions work on an in-memory
// map, which [ResetKV] empties, so that handlers can be unit-tested with
// [Call].

// State errors, from the host's codes (docs/reactor-abi.md).
var (
	ErrStateInvalid  = errors.New("cloister: invalid state key or argument")
	ErrStateTooLarge = errors.New("cloister: state value too large")
	ErrStateQuota    = errors.New("cloister: the function's state quota is exhausted")
	ErrStateDenied   = errors.New("cloister: state not granted to the function")
	// ErrStateFailed means the platform detected tampering with the state
	// or could not reach it. The request fails whatever the handler does.
	ErrStateFailed = errors.New("cloister: state failed")
)

// KVGet returns the value of key and whether it exists.
func KVGet(key []byte) ([]byte, bool, error) { return kvGet(key) }

// KVPut sets key to value.
func KVPut(key, value []byte) error { return kvPut(key, value) }

// KVDelete deletes key and reports whether it existed.
func KVDelete(key []byte) (bool, error) { return kvDelete(key) }

// KVCompareAndSwap sets key to newValue if its value is oldValue, and
// reports whether it did. A nil oldValue means "absent" and a nil
// newValue means "delete" (use an empty, non-nil slice for an empty
// value).
func KVCompareAndSwap(key, oldValue, newValue []byte) (bool, error) {
	return kvCAS(key, oldValue, newValue)
}

// KVList returns every key that starts with prefix, in byte order.
func KVList(prefix []byte) ([][]byte, error) {
	var all [][]byte
	var start []byte
	for {
		keys, err := kvList(prefix, start)
		if err != nil {
			return nil, err
		}
		if len(keys) == 0 {
			return all, nil
		}
		all = append(all, keys...)
		start = keys[len(keys)-1]
	}
}
