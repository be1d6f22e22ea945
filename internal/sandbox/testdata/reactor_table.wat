;; reactor_table mutates its table: each call reports which function slot 0
;; holds ("a" or "b"), then stores the other one there. A table cannot be
;; restored by a reset, so the platform discards the sandbox after every
;; call, and every call answers "a".
(module
  (import "cloister" "output_write" (func $output_write (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (table 1 funcref)
  (type $t (func (result i32)))
  (func $a (type $t) (i32.const 97))
  (func $b (type $t) (i32.const 98))
  (elem (i32.const 0) $a)
  (elem declare func $b)
  (func (export "cloister_handle") (result i32)
    (i32.store8 (i32.const 0) (call_indirect (type $t) (i32.const 0)))
    (drop (call $output_write (i32.const 0) (i32.const 1)))
    (table.set 0 (i32.const 0) (ref.func $b))
    (i32.const 0)))
