;; sleep waits 2 s on the clock (poll_oneoff with one relative clock
;; subscription), then writes "slept". A call that holds a slot while using
;; no CPU, as a hostile tenant's slow calls would. Needs the clock capability.
(module
  (import "wasi_snapshot_preview1" "poll_oneoff"
    (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit"
    (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  ;; Layout: subscription at 0 (48 bytes), event at 64 (32 bytes), nevents
  ;; at 96, iovec at 104, nwritten at 112, "slept" at 128.
  (data (i32.const 128) "slept")
  (func (export "_start")
    ;; tag 0 (clock) at 8, clock id 1 (monotonic) at 16, timeout 2e9 ns at
    ;; 24, precision 0 at 32, flags 0 (relative) at 40.
    (i32.store8 (i32.const 8) (i32.const 0))
    (i32.store (i32.const 16) (i32.const 1))
    (i64.store (i32.const 24) (i64.const 2000000000))
    (if (call $poll_oneoff (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 96))
      (then (call $proc_exit (i32.const 1))))
    (i32.store (i32.const 104) (i32.const 128))
    (i32.store (i32.const 108) (i32.const 5))
    (drop (call $fd_write (i32.const 1) (i32.const 104) (i32.const 1) (i32.const 112)))))
