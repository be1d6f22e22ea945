;; no_globals has memory, a table and code but no global at all: Prepare
;; exports nothing and reports no flag.
;;
;; Build: wat2wasm no_globals.wat -o no_globals.wasm
(module
  (memory (export "memory") 1)
  (table 2 funcref)
  (func $double (param i32) (result i32) (i32.mul (local.get 0) (i32.const 2)))
  (elem (i32.const 0) $double)
  (func (export "apply") (param $x i32) (result i32)
    (call_indirect (param i32) (result i32) (local.get $x) (i32.const 0)))
  (func (export "read") (param $p i32) (result i32) (i32.load (local.get $p))))
