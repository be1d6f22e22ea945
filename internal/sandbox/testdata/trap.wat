;; trap executes unreachable.
(module
  (func (export "_start")
    unreachable))
