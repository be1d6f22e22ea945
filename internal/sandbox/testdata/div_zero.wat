;; div_zero divides by zero.
(module
  (func (export "_start")
    (drop (i32.div_s (i32.const 1) (i32.const 0)))))
