;; table_bomb declares a table with no maximum and tries to grow it far
;; past MaxTableEntries (2^20). It exits with:
;;   0 if growing by 2^31 fails, growing to exactly 2^20 entries works,
;;     and growing one more fails (the sandbox bounds the table);
;;   1, 2 or 3 if the first, second or third of those went otherwise.
(module
  (import "wasi_snapshot_preview1" "proc_exit"
    (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (table $t 1 funcref)
  (func (export "_start")
    (if (i32.ne (table.grow $t (ref.null func) (i32.const 0x7fffffff)) (i32.const -1))
      (then (call $proc_exit (i32.const 1))))
    (if (i32.ne (table.grow $t (ref.null func) (i32.const 1048575)) (i32.const 1))
      (then (call $proc_exit (i32.const 2))))
    (if (i32.ne (table.grow $t (ref.null func) (i32.const 1)) (i32.const -1))
      (then (call $proc_exit (i32.const 3))))))
