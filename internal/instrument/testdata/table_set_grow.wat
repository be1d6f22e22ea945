;; table_set_grow writes its table with table.set and grows it with
;; table.grow: Prepare reports MutatesTables. It defines no global.
;;
;; Build: wat2wasm table_set_grow.wat -o table_set_grow.wasm
(module
  (table $t 1 10 funcref)
  (func $f (result i32) (i32.const 42))
  (elem declare func $f)
  ;; set puts $f in slot $i.
  (func (export "set") (param $i i32)
    (table.set $t (local.get $i) (ref.func $f)))
  ;; grow adds $n null slots and returns the old size, or -1.
  (func (export "grow") (param $n i32) (result i32)
    (table.grow $t (ref.null func) (local.get $n)))
  (func (export "size") (result i32) (table.size $t)))
