;; br_table maps an index to a value through a br_table of four targets
;; and a default, nested five blocks deep.
;;
;; Build: wat2wasm br_table.wat -o br_table.wasm
(module
  (global $calls (mut i64) (i64.const 0))
  (func (export "pick") (param $i i32) (result i32)
    (global.set $calls (i64.add (global.get $calls) (i64.const 1)))
    (block $default
      (block $three
        (block $two
          (block $one
            (block $zero
              (br_table $zero $one $two $three $default (local.get $i)))
            (return (i32.const 100)))
          (return (i32.const 101)))
        (return (i32.const 102)))
      (return (i32.const 103)))
    (i32.const -1)))
