// Command kvguest is a reactor that kv_test.go builds with the SDK to run
// its state functions through the platform's sandbox. A request is
// "op key [value]":
//
//	inc k      increments the decimal counter k with KVCompareAndSwap
//	get k      the value of k, or "absent"
//	put k v    sets k to v
//	del k      deletes k: "1" if it existed, else "0"
//	list p     the keys that start with p, comma-separated
//	big k n    puts n bytes at k and reads them back (the retry path)
//
// An SDK error is returned as the handler's error (code 1, text on stderr).
package main

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"

	cloister "github.com/cloister-faas/cloister/sdk/go"
)

func init() { cloister.Handle(handle) }

func handle(input []byte) ([]byte, error) {
	f := strings.SplitN(string(input), " ", 3)
	for len(f) < 3 {
		f = append(f, "")
	}
	op, key, arg := f[0], []byte(f[1]), f[2]
	switch op {
	case "inc":
		for {
			cur, ok, err := cloister.KVGet(key)
			if err != nil {
				return nil, err
			}
			n := 0
			var old []byte
			if ok {
				n, _ = strconv.Atoi(string(cur))
				old = cur
			}
			next := []byte(strconv.Itoa(n + 1))
			swapped, err := cloister.KVCompareAndSwap(key, old, next)
			if err != nil {
				return nil, err
			}
			if swapped {
				return next, nil
			}
		}
	case "get":
		v, ok, err := cloister.KVGet(key)
		if err != nil {
			return nil, err
		}
		if !ok {
			return []byte("absent"), nil
		}
		return v, nil
	case "put":
		return nil, cloister.KVPut(key, []byte(arg))
	case "del":
		ok, err := cloister.KVDelete(key)
		if err != nil {
			return nil, err
		}
		if ok {
			return []byte("1"), nil
		}
		return []byte("0"), nil
	case "list":
		keys, err := cloister.KVList(key)
		if err != nil {
			return nil, err
		}
		return bytes.Join(keys, []byte(",")), nil
	case "big":
		n, _ := strconv.Atoi(arg)
		v := bytes.Repeat([]byte("x"), n)
		if err := cloister.KVPut(key, v); err != nil {
			return nil, err
		}
		got, ok, err := cloister.KVGet(key)
		if err != nil || !ok || !bytes.Equal(got, v) {
			return nil, fmt.Errorf("read back %d bytes, %v, %v", len(got), ok, err)
		}
		return []byte(strconv.Itoa(len(got))), nil
	}
	return nil, fmt.Errorf("unknown op %q", op)
}

func main() {}
