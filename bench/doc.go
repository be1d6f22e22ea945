// Package bench holds Cloister's end-to-end benchmarks against baselines.
// Its code lives in test files: `go test -bench BenchmarkInvoke ./bench/`
// starts one single-process node (embedded NATS, coordinator, sim-TEE
// worker, HTTP gateway), deploys a trivial echo function and measures
// invocation throughput and latency over loopback HTTP in each invocation
// mode, against a native net/http echo handler as the ceiling. README.md
// holds the latest results and the command that made them; cmd/benchtable
// turns a run's output into that table.
//
// The benchmarks must never report a number for work they did not do: every
// operation checks that the output equals the input, and the confidential
// modes verify the receipt and decrypt the response as any SDK user would.
package bench
