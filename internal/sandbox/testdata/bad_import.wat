;; bad_import imports a function the sandbox does not provide.
(module
  (import "env" "open_socket" (func $open (param i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (drop (call $open (i32.const 0)))))
