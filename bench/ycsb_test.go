package bench

import (
	"bytes"
	"context"
	"encoding/binary"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/cloister-faas/cloister/internal/bus"
	"github.com/cloister-faas/cloister/internal/sandbox"
	"github.com/cloister-faas/cloister/internal/state"
	"github.com/cloister-faas/cloister/internal/worker"
)

var (
	ycsbConc    = flag.Int("ycsb.conc", 16, "concurrent invocations in each BenchmarkYCSB sub-benchmark")
	ycsbPipe    = flag.Int("ycsb.pipeline", 1, "anchor batches in flight per function (state.Options.Pipeline) in BenchmarkYCSB")
	ycsbRecords = flag.Int("ycsb.records", 10000, "keys loaded before BenchmarkYCSB")
)

// ycsbValueSize is the size of every value (YCSB's default record: 10
// fields of 100 bytes, here one 1 KB value).
const ycsbValueSize = 1024

// kvWasm is the reactor that drives the kv_* host functions.
const kvWasm = "../internal/sandbox/testdata/kv.wasm"

// ycsbEnv is one embedded NATS server (JetStream file store), the state
// anchor served on the bus as the coordinator serves it, a worker-side
// sealed store and an unsealed one over the same bucket, and the kv
// reactor.
type ycsbEnv struct {
	srv      *bus.Server
	conns    []*nats.Conn
	anchor   *state.Anchor
	sealed   *state.Store
	unsealed *state.Store
	engine   *sandbox.Engine
	fn       *sandbox.Function
	kv       map[bool]sandbox.KV       // by sealed
	bucket   map[bool]*countingKV      // by sealed: counts the stores' bucket operations
	metrics  map[bool]*countingMetrics // by sealed: counts what the stores report
	cancel   context.CancelFunc
	dir      string
}

var (
	ycsbOnce   sync.Once
	ycsbShared *ycsbEnv
	ycsbErr    error
)

func (e *ycsbEnv) close() {
	e.cancel()
	if e.fn != nil {
		e.fn.Close()
	}
	if e.engine != nil {
		e.engine.Close(context.Background())
	}
	for _, s := range []*state.Store{e.sealed, e.unsealed} {
		if s != nil {
			s.Close()
		}
	}
	for _, c := range e.conns {
		c.Close()
	}
	if e.anchor != nil {
		e.anchor.Close()
	}
	if e.srv != nil {
		e.srv.Shutdown()
	}
	os.RemoveAll(e.dir)
}

func setupYCSB() (*ycsbEnv, error) {
	ctx, cancel := context.WithCancel(context.Background())
	dir, err := os.MkdirTemp("", "cloister-ycsb-")
	if err != nil {
		cancel()
		return nil, err
	}
	e := &ycsbEnv{cancel: cancel, dir: dir, kv: map[bool]sandbox.KV{}}
	fail := func(err error) (*ycsbEnv, error) { e.close(); return nil, err }
	log := slog.New(slog.DiscardHandler)
	if e.srv, err = bus.StartServer(bus.ServerOptions{Dir: filepath.Join(dir, "nats")}); err != nil {
		return fail(err)
	}
	connect := func(name string) (*nats.Conn, *bus.Stores, error) {
		nc, err := e.srv.Connect(name)
		if err != nil {
			return nil, nil, err
		}
		e.conns = append(e.conns, nc)
		st, err := bus.OpenStores(ctx, nc, 1, log)
		return nc, st, err
	}
	coordNC, _, err := connect("coordinator")
	if err != nil {
		return fail(err)
	}
	workerNC, workerSt, err := connect("worker")
	if err != nil {
		return fail(err)
	}
	master := make([]byte, 32)
	copy(master, "ycsb benchmark master secret....")
	if e.anchor, err = state.OpenAnchor(state.AnchorConfig{Dir: filepath.Join(dir, "anchor"), Master: master, Logger: log}); err != nil {
		return fail(err)
	}
	// The coordinator's handler (internal/coordinator/state.go,
	// handleStateAnchorBytes), minus the error mapping.
	if _, err := bus.ServeBytes(ctx, coordNC, bus.SubjectStateAnchor, bus.CoordinatorQueue, 256, log, func(_ context.Context, b []byte) ([]byte, error) {
		return e.anchor.HandleBinary(b)
	}); err != nil {
		return fail(err)
	}
	e.bucket = map[bool]*countingKV{true: {KeyValue: workerSt.State}, false: {KeyValue: workerSt.State}}
	e.metrics = map[bool]*countingMetrics{true: {}, false: {}}
	if e.sealed, err = state.NewStore(state.Options{KV: e.bucket[true], Conn: workerNC, Anchor: state.BusTransport{Conn: workerNC}, Metrics: e.metrics[true], Logger: log, Pipeline: *ycsbPipe}); err != nil {
		return fail(err)
	}
	if e.unsealed, err = state.NewStore(state.Options{KV: e.bucket[false], Conn: workerNC, Unsealed: true, Metrics: e.metrics[false], Logger: log}); err != nil {
		return fail(err)
	}
	key, _ := state.DeriveKey(master, "bench", "ycsb")
	sf, err := e.sealed.Function("bench", "ycsb", key)
	if err != nil {
		return fail(err)
	}
	uf, err := e.unsealed.Function("bench", "ycsb", nil)
	if err != nil {
		return fail(err)
	}
	e.kv[true], e.kv[false] = worker.NewStateKV(sf), worker.NewStateKV(uf)
	if e.engine, err = sandbox.New(ctx, sandbox.Config{Logger: log}); err != nil {
		return fail(err)
	}
	wasm, err := os.ReadFile(kvWasm)
	if err != nil {
		return fail(err)
	}
	m, err := e.engine.Compile(ctx, "kv", wasm, sandbox.Limits{})
	if err != nil {
		return fail(err)
	}
	if e.fn, err = m.NewFunction(ctx, sandbox.FunctionSpec{MaxSandboxes: 256, IdleTimeout: -1}); err != nil {
		return fail(err)
	}
	// Load the records, sealed and unsealed.
	for _, sealed := range []bool{false, true} {
		var next int64
		var mu sync.Mutex
		if _, err := runLoad(ctx, *ycsbRecords, *ycsbConc, func(ctx context.Context) error {
			mu.Lock()
			i := next
			next++
			mu.Unlock()
			return e.update(ctx, sealed, int(i), 'a')
		}); err != nil {
			return fail(fmt.Errorf("loading (sealed %v): %w", sealed, err))
		}
	}
	return e, nil
}

func ycsbKey(i int) string { return "user" + strconv.Itoa(i) }

// ycsbValue is 1 KB: the key, a '|', then fill.
func ycsbValue(key string, fill byte) []byte {
	v := bytes.Repeat([]byte{fill}, ycsbValueSize)
	copy(v, key+"|")
	return v
}

func (e *ycsbEnv) invoke(ctx context.Context, sealed bool, in []byte) (int32, []byte, error) {
	res, err := e.fn.Call(sandbox.WithKV(ctx, e.kv[sealed]), in)
	if err != nil {
		return 0, nil, err
	}
	if len(res.Stdout) < 4 {
		return 0, nil, fmt.Errorf("short response")
	}
	return int32(binary.LittleEndian.Uint32(res.Stdout)), res.Stdout[4:], nil
}

func (e *ycsbEnv) read(ctx context.Context, sealed bool, i int) error {
	key := ycsbKey(i)
	c, v, err := e.invoke(ctx, sealed, append([]byte{'g', byte(len(key))}, key...))
	if err != nil {
		return err
	}
	if c != ycsbValueSize || len(v) != ycsbValueSize || !bytes.HasPrefix(v, []byte(key+"|")) {
		return fmt.Errorf("read %s: code %d, %d bytes", key, c, len(v))
	}
	return nil
}

func (e *ycsbEnv) update(ctx context.Context, sealed bool, i int, fill byte) error {
	key := ycsbKey(i)
	in := append([]byte{'p', byte(len(key))}, key...)
	c, _, err := e.invoke(ctx, sealed, append(in, ycsbValue(key, fill)...))
	if err != nil {
		return err
	}
	if c != 0 {
		return fmt.Errorf("update %s: code %d", key, c)
	}
	return nil
}

// ycsbRun is one workload in one mode (sealed or not): its key and
// operation sequence, and what its operations measured so far.
type ycsbRun struct {
	e      *ycsbEnv
	sealed bool
	reads  float64 // the share of reads

	mu   sync.Mutex
	rng  *rand.Rand
	zipf *rand.Zipf

	elapsed, cpu     time.Duration
	lat              []time.Duration
	nReads, nUpdates atomic.Int64
	readNS, updateNS atomic.Int64
	anchor, combined uint64
	bucketR, bucketW uint64
	n                int
}

func (e *ycsbEnv) newRun(sealed bool, reads float64) *ycsbRun {
	// Both modes draw the same keys and operations.
	return &ycsbRun{e: e, sealed: sealed, reads: reads,
		rng:  rand.New(rand.NewPCG(1, 2)),
		zipf: rand.NewZipf(rand.New(rand.NewPCG(3, 4)), 1.01, 1, uint64(*ycsbRecords-1))}
}

// run performs n more operations with the benchmark's clients.
func (r *ycsbRun) run(n int) error {
	e := r.e
	anchor0, combined0 := e.anchorRequests(r.sealed), e.metrics[true].putsCombined.Load()
	reads0, writes0 := e.bucketReads(r.sealed), e.bucket[r.sealed].writes.Load()
	cpu0 := processCPU()
	l, err := runLoad(context.Background(), n, *ycsbConc, func(ctx context.Context) error {
		r.mu.Lock()
		i, x := int(r.zipf.Uint64()), r.rng.Float64()
		r.mu.Unlock()
		t0 := time.Now()
		if x < r.reads {
			err := e.read(ctx, r.sealed, i)
			r.readNS.Add(int64(time.Since(t0)))
			r.nReads.Add(1)
			return err
		}
		err := e.update(ctx, r.sealed, i, byte('b'+i%20))
		r.updateNS.Add(int64(time.Since(t0)))
		r.nUpdates.Add(1)
		return err
	})
	r.cpu += processCPU() - cpu0
	if err != nil {
		return err
	}
	r.elapsed += l.elapsed
	r.lat = append(r.lat, l.lat...)
	r.n += n
	if r.sealed {
		r.anchor += e.anchorRequests(true) - anchor0
		r.combined += e.metrics[true].putsCombined.Load() - combined0
	}
	r.bucketR += e.bucketReads(r.sealed) - reads0
	r.bucketW += e.bucket[r.sealed].writes.Load() - writes0
	return nil
}

func (r *ycsbRun) throughput() float64 { return float64(r.n) / r.elapsed.Seconds() }

// cpuPerOp is the process's CPU time per operation, in µs.
func (r *ycsbRun) cpuPerOp() float64 { return r.cpu.Seconds() * 1e6 / float64(r.n) }

// report reports r's measures, their names prefixed with prefix.
func (r *ycsbRun) report(b *testing.B, prefix string) {
	slices.Sort(r.lat)
	per := func(v uint64) float64 { return float64(v) / float64(r.n) }
	b.ReportMetric(r.cpuPerOp(), prefix+"cpu-µs/op")
	b.ReportMetric(r.throughput(), prefix+"ops/s")
	b.ReportMetric(ms(percentile(r.lat, 50)), prefix+"p50-ms")
	b.ReportMetric(ms(percentile(r.lat, 99)), prefix+"p99-ms")
	if n := r.nReads.Load(); n > 0 {
		b.ReportMetric(float64(r.readNS.Load())/float64(n)/1e6, prefix+"read-mean-ms")
	}
	if n := r.nUpdates.Load(); n > 0 {
		b.ReportMetric(float64(r.updateNS.Load())/float64(n)/1e6, prefix+"update-mean-ms")
	}
	b.ReportMetric(per(r.bucketR), prefix+"bucket-reads/op")
	b.ReportMetric(per(r.bucketW), prefix+"bucket-writes/op")
	if r.sealed {
		b.ReportMetric(per(r.anchor), prefix+"anchor-batches/op")
		b.ReportMetric(per(r.combined), prefix+"puts-combined/op")
	}
}

// ycsbRounds is how many times the interleaved sub-benchmarks alternate
// the two modes.
const ycsbRounds = 10

// BenchmarkYCSB runs YCSB's core workloads A (50% reads, 50% updates), B
// (95/5) and C (reads only) over 10,000 records of 1 KB, each through the
// kv reactor (one invocation per operation, in a sandbox reset between
// calls) on the sealed state and on the same bucket with sealing off
// (plaintext values, no anchor, no integrity checks). Keys follow a
// Zipfian distribution (math/rand's, s = 1.01; YCSB's is θ = 0.99).
//
// For each workload, "unsealed" and "sealed" run b.N operations each, and
// report throughput, latency and CPU per operation. "interleaved" runs b.N
// operations in each mode in ycsbRounds alternating rounds, so that drift
// (the machine's other work, the heap, the bucket) falls on both modes
// alike, and reports both modes' measures and the ratios: sealed/unsealed,
// the sealed throughput over the unsealed, and sealed/unsealed-cpu, the
// process's CPU time per operation unsealed over sealed (less sensitive
// than throughput to other work on a shared machine). The ratios are
// there only: with -count N, Go runs each sub-benchmark N times in a row,
// so the N sealed runs would all follow the last unsealed one.
func BenchmarkYCSB(b *testing.B) {
	ycsbOnce.Do(func() { ycsbShared, ycsbErr = setupYCSB() })
	if ycsbErr != nil {
		b.Fatal(ycsbErr)
	}
	e := ycsbShared
	workloads := []struct {
		name  string
		reads float64
	}{{"A", 0.5}, {"B", 0.95}, {"C", 1}}
	for _, w := range workloads {
		for _, sealed := range []bool{false, true} {
			name := w.name + "/unsealed"
			if sealed {
				name = w.name + "/sealed"
			}
			b.Run(name, func(b *testing.B) {
				r := e.newRun(sealed, w.reads)
				b.ResetTimer()
				err := r.run(b.N)
				b.StopTimer()
				if err != nil {
					b.Fatal(err)
				}
				r.report(b, "")
			})
		}
		b.Run(w.name+"/interleaved", func(b *testing.B) {
			runs := [2]*ycsbRun{e.newRun(false, w.reads), e.newRun(true, w.reads)}
			b.ResetTimer()
			for round := range ycsbRounds {
				n := b.N / ycsbRounds
				if round < b.N%ycsbRounds {
					n++ // b.N in all
				}
				for _, r := range runs {
					if n == 0 {
						continue
					}
					if err := r.run(n); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.StopTimer()
			runs[0].report(b, "unsealed-")
			runs[1].report(b, "sealed-")
			b.ReportMetric(runs[1].throughput()/runs[0].throughput(), "sealed/unsealed")
			b.ReportMetric(runs[0].cpuPerOp()/runs[1].cpuPerOp(), "sealed/unsealed-cpu")
		})
	}
}

// processCPU is the CPU time (user and system) this process used so far:
// the sandboxes, the NATS server, the anchor and the stores all run in it.
// Per operation, it measures what sealing costs independently of other
// work on the machine, which moves the throughputs.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// bucketReads counts the reads of the bucket by the store of one mode.
func (e *ycsbEnv) bucketReads(sealed bool) uint64 {
	return e.bucket[sealed].reads.Load() + e.metrics[sealed].directReads.Load()
}

func (e *ycsbEnv) anchorRequests(sealed bool) uint64 {
	if !sealed {
		return 0
	}
	return e.metrics[true].anchorRequests.Load()
}
