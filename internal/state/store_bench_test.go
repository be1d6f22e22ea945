package state

import (
	"bytes"
	"context"
	"math/rand/v2"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// BenchmarkStore runs YCSB A's mix (half reads, half puts) and C's (reads
// only), 1 KB values, 1,000 keys, uniform, straight on a store, without
// sandboxes, sealed (the anchor in the same process) and unsealed: the CPU
// that sealing adds to each operation, with less noise than bench/'s
// BenchmarkYCSB.
func BenchmarkStore(b *testing.B) {
	e := newEnv(b, Limits{})
	k, _ := DeriveKey(e.master, "ns", "fn")
	unsealed, err := NewStore(Options{KV: e.kv, Conn: e.nc, Unsealed: true, Logger: quiet()})
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
		for _, w := range []struct {
			name  string
			reads int // in 100
		}{{"A", 50}, {"C", 100}} {
			b.Run(w.name+"/"+mode, func(b *testing.B) {
				var seed atomic.Uint64
				b.SetParallelism(8)
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					rng := rand.New(rand.NewPCG(seed.Add(1), 0))
					for pb.Next() {
						key := []byte(strconv.Itoa(rng.IntN(keys)))
						if rng.IntN(100) < w.reads {
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
}

// BenchmarkAnchorBatch sends one-operation batches (a read of a key's
// entry) to the anchor over the bus, as the coordinator serves it, from
// one goroutine: the round trip and the CPU (the process's: both ends and
// the NATS server) of one anchor batch.
func BenchmarkAnchorBatch(b *testing.B) {
	e := newEnvLease(b, Limits{}, -1)
	ctx := context.Background()
	s := busStore(b, e, 256)
	k, _ := DeriveKey(e.master, "ns", "fn")
	f, _ := s.Function("ns", "fn", k)
	b.ResetTimer()
	cpu0 := processCPU()
	for range b.N {
		if _, err := f.call(ctx, op{Kind: opGet, Key: []byte("k")}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(processCPU()-cpu0)/1e3/float64(b.N), "cpu-µs/batch")
}

// processCPU is the CPU time (user and system) this process used so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
