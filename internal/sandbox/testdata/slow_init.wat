;; slow_init is a reactor (Cloister reactor ABI v1) whose cloister_init
;; counts to 2^40 (minutes of work: a function with a very slow start-up,
;; finite but longer than any deploy timeout); each call answers "ready".
;; Initialisation runs on a deterministic clock, so it cannot sleep: it
;; has to spin.
(module
  (import "cloister" "output_write" (func $output_write (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (global $n (mut i64) (i64.const 0))
  (data (i32.const 128) "ready")
  (func (export "cloister_init")
    (loop $spin
      (global.set $n (i64.add (global.get $n) (i64.const 1)))
      (br_if $spin (i64.lt_u (global.get $n) (i64.const 1099511627776)))))
  (func (export "cloister_handle") (result i32)
    (drop (call $output_write (i32.const 128) (i32.const 5)))
    (i32.const 0)))
