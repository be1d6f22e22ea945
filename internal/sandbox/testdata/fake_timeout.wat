;; fake_timeout exits with 0xefffffff, the code wazero reserves for a context
;; deadline, to pose as a timeout. The sandbox must report a plain exit.
(module
  (import "wasi_snapshot_preview1" "proc_exit"
    (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (call $proc_exit (i32.const 0xefffffff))))
