;; bad_signature imports fd_write with the wrong signature.
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (drop (call $fd_write (i32.const 1)))))
