;; A WASI command that puts k = v in its state and exits with the
;; negated result of kv_put (0 on success, 5 when denied).
(module
  (import "cloister" "kv_put" (func $kv_put (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "kv")
  (func (export "_start")
    (call $exit (i32.sub (i32.const 0) (call $kv_put (i32.const 0) (i32.const 1) (i32.const 1) (i32.const 1))))))
