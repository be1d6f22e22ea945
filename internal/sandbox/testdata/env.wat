;; env writes its whole environment to stdout as "KEY=VALUE\0" entries, in
;; the order the host gave them.
(module
  (import "wasi_snapshot_preview1" "environ_sizes_get"
    (func $environ_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get"
    (func $environ_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit"
    (func $proc_exit (param i32)))
  (memory (export "memory") 2)
  ;; Layout: count at 0, size at 4, iovec at 8, nwritten at 16,
  ;; pointer array at 1024, strings at 65536 (the second page).
  (func (export "_start")
    (if (call $environ_sizes_get (i32.const 0) (i32.const 4))
      (then (call $proc_exit (i32.const 1))))
    ;; Refuse sizes that do not fit the layout.
    (if (i32.gt_u (i32.load (i32.const 0)) (i32.const 8000))
      (then (call $proc_exit (i32.const 2))))
    (if (i32.gt_u (i32.load (i32.const 4)) (i32.const 65536))
      (then (call $proc_exit (i32.const 2))))
    (if (call $environ_get (i32.const 1024) (i32.const 65536))
      (then (call $proc_exit (i32.const 1))))
    (i32.store (i32.const 8) (i32.const 65536))
    (i32.store (i32.const 12) (i32.load (i32.const 4)))
    (if (call $fd_write (i32.const 1) (i32.const 8) (i32.const 1) (i32.const 16))
      (then (call $proc_exit (i32.const 1))))))
