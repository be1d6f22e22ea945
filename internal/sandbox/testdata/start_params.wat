;; start_params exports a _start that takes a parameter, so it is not a
;; WASI command.
(module
  (memory (export "memory") 1)
  (func (export "_start") (param i32)))
