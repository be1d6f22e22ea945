;; grow_counter checks that a run's memory starts clean even where an
;; earlier run grew it: it grows memory by one page, adds one to the word at
;; the start of the new page, and writes the memory size in pages before the
;; grow and the word, as two bytes. A fresh instance always writes 1 and 1.
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit"
    (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  ;; Layout: iovec at 0, nwritten at 8, output at 64; the word at 65536.
  (func (export "_start")
    (local $before i32)
    (local.set $before (memory.grow (i32.const 1)))
    (if (i32.eq (local.get $before) (i32.const -1))
      (then (call $proc_exit (i32.const 1))))
    (i32.store (i32.const 65536) (i32.add (i32.load (i32.const 65536)) (i32.const 1)))
    (i32.store8 (i32.const 64) (local.get $before))
    (i32.store8 (i32.const 65) (i32.load (i32.const 65536)))
    (i32.store (i32.const 0) (i32.const 64))
    (i32.store (i32.const 4) (i32.const 2))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
