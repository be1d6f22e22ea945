;; stderr_flood writes 256 KiB to stderr in 64 KiB writes, then "ok\n" to
;; stdout, and exits normally. Failed writes make it exit with code 1.
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit"
    (func $proc_exit (param i32)))
  (memory (export "memory") 2)
  ;; Layout: iovec at 0, nwritten at 8, "ok\n" at 16, buffer in the second page.
  (data (i32.const 16) "ok\n")
  (data (i32.const 65536) "log line")
  (func (export "_start")
    (local $i i32)
    (i32.store (i32.const 0) (i32.const 65536))
    (i32.store (i32.const 4) (i32.const 65536))
    (loop $flood
      (if (call $fd_write (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 8))
        (then (call $proc_exit (i32.const 1))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $flood (i32.lt_u (local.get $i) (i32.const 4))))
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 3))
    (if (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))
      (then (call $proc_exit (i32.const 1))))))
