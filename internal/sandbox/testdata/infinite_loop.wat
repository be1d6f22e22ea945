;; infinite_loop never returns. Only the wall-time limit stops it.
(module
  (func (export "_start")
    (loop $forever
      (br $forever))))
