;; dirty2_64mib is a benchmark reactor with 1024 pages of memory (64 MiB) whose
;; handler writes to two pages, far apart: the unit of work BenchmarkReset
;; measures (fresh instance, reset from the snapshot, or warm without reset).
(module
  (memory (export "memory") 1024)
  (global $calls (mut i32) (i32.const 0))
  (func (export "cloister_handle") (result i32)
    (global.set $calls (i32.add (global.get $calls) (i32.const 1)))
    (i32.store (i32.const 4096) (global.get $calls))
    (i32.store (i32.const 33554432) (global.get $calls))
    (i32.const 0)))
