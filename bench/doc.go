// Package bench holds Cloister's end-to-end benchmarks against baselines.
// Its code lives in test files:
//
//   - `go test -bench BenchmarkInvoke ./bench/` starts one single-process
//     node (embedded NATS, coordinator, sim-TEE worker, HTTP gateway),
//     deploys a trivial echo function, as a WASI command and as a reactor,
//     and measures invocation throughput and latency over loopback HTTP in
//     each invocation mode, against a native net/http echo handler as the
//     ceiling;
//   - `go test -bench BenchmarkColdStart ./bench/` starts a second node whose
//     reactor pools shrink to zero after 100 ms, and measures cold starts
//     through the client SDK: deploy to first verified result (a ~100 KB
//     reactor and the Go example reactor, with the same or new code on each
//     deploy), the first call after the pool shrank to zero, and a warm call.
//
// README.md holds the latest results, with those of BenchmarkReset in
// internal/sandbox, and the commands that made them; cmd/benchtable turns a
// run's output into the tables there, and run.sh runs each benchmark.
//
// The benchmarks must never report a number for work they did not do: every
// operation checks its exact output, the confidential modes verify the
// receipt and decrypt the response as any SDK user would, and the cold-start
// cases check on the pool's counters that each timed call was cold (or warm).
package bench
