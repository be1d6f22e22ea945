;; data_out_of_bounds has a data segment past the end of its memory, so it
;; compiles but cannot be instantiated.
(module
  (memory (export "memory") 1)
  (data (i32.const 65535) "xx")
  (func (export "_start")))
