package state

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
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

// BenchmarkAnchor commits one-put batches straight to an anchor (Handle,
// as the coordinator's bus handlers call it), its log in a file or in the
// journal on an embedded NATS server, from one client and from 32 at
// once: the cost of making each change durable, alone and shared by group
// commit. records/op is the log records appended per request. (With one
// client every request waits for an append of its own: that is also the
// most an anchor that held its lock across the append could serve.)
func BenchmarkAnchor(b *testing.B) {
	for _, backend := range []string{"file", "journal"} {
		for _, clients := range []int{1, 32} {
			b.Run(fmt.Sprintf("%s/clients=%d", backend, clients), func(b *testing.B) {
				d := newDeployment(b)
				var a *Anchor
				if backend == "journal" {
					a = d.open(b, false)
				} else {
					var err error
					if a, err = OpenAnchor(AnchorConfig{Dir: b.TempDir(), Master: d.master, Lease: -1, Logger: quiet()}); err != nil {
						b.Fatal(err)
					}
					defer a.Close()
				}
				c := newClient(b, d.master)
				var client atomic.Uint64
				b.SetParallelism(max(1, clients/runtime.GOMAXPROCS(0)))
				b.ResetTimer()
				run := func(pb *testing.PB) {
					key := "k" + strconv.FormatUint(client.Add(1), 10)
					for v := uint64(1); pb.Next(); v++ {
						if err := c.put(a, key, v); err != nil {
							b.Error(err)
							return
						}
					}
				}
				if clients == 1 {
					// RunParallel starts at least GOMAXPROCS goroutines.
					for v := uint64(1); v <= uint64(b.N); v++ {
						if err := c.put(a, "k", v); err != nil {
							b.Fatal(err)
						}
					}
				} else {
					b.RunParallel(run)
				}
				b.StopTimer()
				var records uint64
				if a.journal != nil {
					records, _ = a.journal.Position()
				} else {
					records = a.store.(*anchorLog).seq
				}
				b.ReportMetric(float64(records)/float64(b.N), "records/op")
			})
		}
	}
}
