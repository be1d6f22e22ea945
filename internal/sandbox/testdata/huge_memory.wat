;; huge_memory declares a 20000-page (1.25 GiB) minimum memory.
(module
  (memory (export "memory") 20000)
  (func (export "_start")))
