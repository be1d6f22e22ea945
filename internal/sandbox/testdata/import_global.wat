;; import_global imports a global, which the sandbox never provides.
(module
  (import "env" "secret" (global $secret i32))
  (memory (export "memory") 1)
  (func (export "_start")))
