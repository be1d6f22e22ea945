// Command reactor-kv-go is an example Cloister function in Go that keeps
// small documents in the function's sealed state (docs/state.md), with the
// Go SDK's state helpers: KVGet, KVPut, KVDelete, KVCompareAndSwap and
// KVList. It is built as a reactor (GOOS=wasip1 GOARCH=wasm
// -buildmode=c-shared), and its manifest must grant the state capability:
//
//	{"abi": "reactor", "capabilities": {"state": true}}
//
// The request is a JSON object {"op", "key", "value", "delta"}:
//
//	put     sets key to value                        -> {"ok": true}
//	get     reads key                                -> {"found": bool, "value": "..."}
//	delete  deletes key                              -> {"deleted": bool}
//	list    the keys that start with key (a prefix)  -> {"keys": [...]}
//	add     adds delta (default 1) to the integer at key, with
//	        compare-and-set, retrying while concurrent invocations win
//	                                                 -> {"value": N}
//
// Keys are 1 to 256 bytes. A malformed request, or a key that does not
// hold an integer for add, fails with the function's error code 1 and the
// reason on stderr; so does a state failure (the platform then reports
// state_integrity or unavailable, whatever the function answers).
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	cloister "github.com/cloister-faas/cloister/sdk/go"
)

// request is the function's input document.
type request struct {
	Op    string `json:"op"`
	Key   string `json:"key"`
	Value string `json:"value"`
	Delta *int64 `json:"delta"`
}

// maxKey bounds a key (the platform allows 512 bytes).
const maxKey = 256

func init() { cloister.Handle(handle) }

func handle(input []byte) ([]byte, error) {
	var req request
	if err := json.Unmarshal(input, &req); err != nil {
		return nil, fmt.Errorf("invalid JSON request: %w", err)
	}
	if len(req.Key) > maxKey || (req.Key == "" && req.Op != "list") {
		return nil, fmt.Errorf("key must be 1 to %d bytes", maxKey)
	}
	key := []byte(req.Key)
	switch req.Op {
	case "put":
		if err := cloister.KVPut(key, []byte(req.Value)); err != nil {
			return nil, err
		}
		return json.Marshal(map[string]bool{"ok": true})
	case "get":
		v, found, err := cloister.KVGet(key)
		if err != nil {
			return nil, err
		}
		return json.Marshal(struct {
			Found bool   `json:"found"`
			Value string `json:"value"`
		}{found, string(v)})
	case "delete":
		deleted, err := cloister.KVDelete(key)
		if err != nil {
			return nil, err
		}
		return json.Marshal(map[string]bool{"deleted": deleted})
	case "list":
		keys, err := cloister.KVList(key)
		if err != nil {
			return nil, err
		}
		out := make([]string, len(keys))
		for i, k := range keys {
			out[i] = string(k)
		}
		return json.Marshal(map[string][]string{"keys": out})
	case "add":
		delta := int64(1)
		if req.Delta != nil {
			delta = *req.Delta
		}
		v, err := add(key, delta)
		if err != nil {
			return nil, err
		}
		return json.Marshal(map[string]int64{"value": v})
	}
	return nil, fmt.Errorf("unknown op %q: want put, get, delete, list or add", req.Op)
}

// errNotInteger means add found a value that is not a decimal integer.
var errNotInteger = errors.New("the key does not hold an integer")

// errOverflow means the sum does not fit in 64 bits.
var errOverflow = errors.New("the sum overflows a 64-bit integer")

// add adds delta to the decimal integer at key (absent: 0) and returns
// the sum. Compare-and-set makes concurrent adds lose no update: an add
// that lost the race reads the new value and tries again.
func add(key []byte, delta int64) (int64, error) {
	for {
		old, found, err := cloister.KVGet(key)
		if err != nil {
			return 0, err
		}
		var cur int64
		if found {
			if cur, err = strconv.ParseInt(string(old), 10, 64); err != nil {
				return 0, errNotInteger
			}
		} else {
			old = nil // absent, for KVCompareAndSwap
		}
		sum := cur + delta
		if (delta > 0 && sum < cur) || (delta < 0 && sum > cur) {
			return 0, errOverflow
		}
		swapped, err := cloister.KVCompareAndSwap(key, old, strconv.AppendInt(nil, sum, 10))
		if err != nil {
			return 0, err
		}
		if swapped {
			return sum, nil
		}
	}
}

// main is required by -buildmode=c-shared but never run: the platform calls
// _initialize (which runs package initialisation) and then cloister_handle.
func main() {}
