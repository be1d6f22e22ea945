;; echo copies stdin to stdout using fd_read and fd_write.
;; It exits with code 1 if either call fails.
(module
  (import "wasi_snapshot_preview1" "fd_read"
    (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit"
    (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  ;; Layout: iovec at 0 (buf, len), nread at 8, nwritten at 12, buffer at 1024.
  (func (export "_start")
    (local $n i32)
    (block $done
      (loop $copy
        (i32.store (i32.const 0) (i32.const 1024))
        (i32.store (i32.const 4) (i32.const 4096))
        (if (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8))
          (then (call $proc_exit (i32.const 1))))
        (local.set $n (i32.load (i32.const 8)))
        (br_if $done (i32.eqz (local.get $n)))
        ;; Write the chunk, looping on short writes.
        (loop $write
          (i32.store (i32.const 4) (local.get $n))
          (if (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 12))
            (then (call $proc_exit (i32.const 1))))
          (local.set $n (i32.sub (local.get $n) (i32.load (i32.const 12))))
          (i32.store (i32.const 0) (i32.add (i32.load (i32.const 0)) (i32.load (i32.const 12))))
          (br_if $write (i32.gt_s (local.get $n) (i32.const 0))))
        (br $copy)))))
