;; counter checks that every run starts clean. It increments a mutable global
;; and a memory cell once per _start, then prints both values as "G M\n".
;; A fresh instance always prints "1 1".
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (global $count (mut i32) (i32.const 0))
  ;; Layout: memory cell at 0, iovec at 8, nwritten at 16, text at 64.

  ;; $itoa writes the decimal form of $v at $p and returns the byte count.
  (func $itoa (param $v i32) (param $p i32) (result i32)
    (local $len i32) (local $t i32) (local $i i32)
    ;; Count the digits.
    (local.set $t (local.get $v))
    (loop $count
      (local.set $len (i32.add (local.get $len) (i32.const 1)))
      (local.set $t (i32.div_u (local.get $t) (i32.const 10)))
      (br_if $count (local.get $t)))
    ;; Write them from the end.
    (local.set $t (local.get $v))
    (local.set $i (local.get $len))
    (loop $write
      (local.set $i (i32.sub (local.get $i) (i32.const 1)))
      (i32.store8 (i32.add (local.get $p) (local.get $i))
        (i32.add (i32.const 48) (i32.rem_u (local.get $t) (i32.const 10))))
      (local.set $t (i32.div_u (local.get $t) (i32.const 10)))
      (br_if $write (local.get $i)))
    (local.get $len))

  (func (export "_start")
    (local $p i32)
    (global.set $count (i32.add (global.get $count) (i32.const 1)))
    (i32.store (i32.const 0) (i32.add (i32.load (i32.const 0)) (i32.const 1)))
    (local.set $p (i32.const 64))
    (local.set $p (i32.add (local.get $p) (call $itoa (global.get $count) (local.get $p))))
    (i32.store8 (local.get $p) (i32.const 32))
    (local.set $p (i32.add (local.get $p) (i32.const 1)))
    (local.set $p (i32.add (local.get $p) (call $itoa (i32.load (i32.const 0)) (local.get $p))))
    (i32.store8 (local.get $p) (i32.const 10))
    (local.set $p (i32.add (local.get $p) (i32.const 1)))
    (i32.store (i32.const 8) (i32.const 64))
    (i32.store (i32.const 12) (i32.sub (local.get $p) (i32.const 64)))
    (drop (call $fd_write (i32.const 1) (i32.const 8) (i32.const 1) (i32.const 16)))))
