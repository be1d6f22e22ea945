;; start_loop never finishes instantiating: its start function (the wasm
;; start section, run before _start) loops forever.
(module
  (func $init
    (loop $forever
      (br $forever)))
  (start $init)
  (func (export "_start")))
