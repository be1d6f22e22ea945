;; reactor is a test reactor (Cloister reactor ABI v1) that probes the
;; exactness of resets. The first input byte selects what a call does:
;;   c  increment a mutable global and a memory cell, output both as digits
;;   s  store the rest of the input at 4096 (a "secret"), output "ok"
;;   r  output the 8 bytes at 4096 (zeros unless a secret leaked)
;;   g  grow memory by one page, output the page count as a digit
;;   t  increment the global, then trap
;;   l  loop forever
;;   i  output the value cloister_init stored, as a digit
;;   f  close stdout (fd 1), output the errno as a digit
;; After every call the platform restores the snapshot, so c always answers
;; "11", r always answers eight zero bytes, g always "3", i always "7".
(module
  (import "cloister" "input_len" (func $input_len (result i32)))
  (import "cloister" "input_read" (func $input_read (param i32 i32) (result i32)))
  (import "cloister" "output_write" (func $output_write (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_close" (func $fd_close (param i32) (result i32)))
  (memory (export "memory") 2)
  (global $g (mut i32) (i32.const 0))
  (global $init (mut i32) (i32.const 0))

  (func (export "cloister_init")
    (global.set $init (i32.const 7))
    (i32.store8 (i32.const 100) (i32.const 0)))

  ;; out1 writes one byte.
  (func $out1 (param $b i32)
    (i32.store8 (i32.const 16) (local.get $b))
    (drop (call $output_write (i32.const 16) (i32.const 1))))

  (func (export "cloister_handle") (result i32)
    (local $n i32) (local $op i32)
    (local.set $n (call $input_len))
    (drop (call $input_read (i32.const 8192) (local.get $n)))
    (local.set $op (i32.load8_u (i32.const 8192)))
    (block $done
      (if (i32.eq (local.get $op) (i32.const 99)) ;; c
        (then
          (global.set $g (i32.add (global.get $g) (i32.const 1)))
          (i32.store8 (i32.const 0) (i32.add (i32.load8_u (i32.const 0)) (i32.const 1)))
          (call $out1 (i32.add (i32.const 48) (global.get $g)))
          (call $out1 (i32.add (i32.const 48) (i32.load8_u (i32.const 0))))
          (br $done)))
      (if (i32.eq (local.get $op) (i32.const 115)) ;; s
        (then
          (memory.copy (i32.const 4096) (i32.const 8193) (i32.sub (local.get $n) (i32.const 1)))
          (call $out1 (i32.const 111))
          (call $out1 (i32.const 107))
          (br $done)))
      (if (i32.eq (local.get $op) (i32.const 114)) ;; r
        (then
          (drop (call $output_write (i32.const 4096) (i32.const 8)))
          (br $done)))
      (if (i32.eq (local.get $op) (i32.const 103)) ;; g
        (then
          (drop (memory.grow (i32.const 1)))
          (call $out1 (i32.add (i32.const 48) (memory.size)))
          (br $done)))
      (if (i32.eq (local.get $op) (i32.const 116)) ;; t
        (then
          (global.set $g (i32.add (global.get $g) (i32.const 1)))
          (unreachable)))
      (if (i32.eq (local.get $op) (i32.const 108)) ;; l
        (then (loop $forever (br $forever))))
      (if (i32.eq (local.get $op) (i32.const 102)) ;; f
        (then
          (call $out1 (i32.add (i32.const 48) (call $fd_close (i32.const 1))))
          (br $done)))
      (if (i32.eq (local.get $op) (i32.const 105)) ;; i
        (then
          (call $out1 (i32.add (i32.const 48) (global.get $init)))
          (br $done)))
      (return (i32.const 2)))
    (i32.const 0)))
