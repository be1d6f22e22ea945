package state

import (
	"bytes"
	"context"
	"math/rand/v2"
	"strconv"
	"sync/atomic"
	"testing"
)

// BenchmarkStore runs YCSB A's mix (half reads, half puts, 1 KB values,
// 1,000 keys, uniform) straight on a store, without sandboxes, sealed
// (the anchor in the same process) and unsealed: the CPU that sealing adds
// to each operation, with less noise than bench/'s BenchmarkYCSB.
func BenchmarkStore(b *testing.B) {
	e := newEnv(b, Limits{})
	k, _ := DeriveKey(e.master, "ns", "fn")
	unsealed, err := NewStore(Options{KV: e.kv, Unsealed: true, Logger: quiet()})
	if err != nil {
		b.Fatal(err)
	}
	defer unsealed.Close()
	const keys = 1000
	value := bytes.Repeat([]byte{'v'}, 1024)
	for _, mode := range []string{"unsealed", "sealed"} {
		f := e.fn(b, "ns", "fn")
		if mode == "unsealed" {
			f, _ = unsealed.Function("ns", "fn", k)
		}
		ctx := context.Background()
		for i := range keys {
			if err := f.Put(ctx, []byte(strconv.Itoa(i)), value); err != nil {
				b.Fatal(err)
			}
		}
		b.Run(mode, func(b *testing.B) {
			var seed atomic.Uint64
			b.SetParallelism(8)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				rng := rand.New(rand.NewPCG(seed.Add(1), 0))
				for pb.Next() {
					key := []byte(strconv.Itoa(rng.IntN(keys)))
					if rng.IntN(2) == 0 {
						if _, _, err := f.Get(ctx, key); err != nil {
							b.Error(err)
							return
						}
					} else if err := f.Put(ctx, key, value); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
