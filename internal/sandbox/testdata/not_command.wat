;; not_command is a valid module that is not a WASI command: no _start.
(module
  (memory (export "memory") 1)
  (func (export "run")))
