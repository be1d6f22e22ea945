;; memory_grow grows its memory with memory.grow: Prepare reports
;; MemoryGrows. Its one global is mutable.
;;
;; Build: wat2wasm memory_grow.wat -o memory_grow.wasm
(module
  (memory 1 4)
  (global $grown (mut i32) (i32.const 0))
  ;; grow adds $n pages, counts the calls that succeeded, and returns the
  ;; old size in pages, or -1.
  (func (export "grow") (param $n i32) (result i32)
    (local $old i32)
    (local.set $old (memory.grow (local.get $n)))
    (if (i32.ne (local.get $old) (i32.const -1))
      (then (global.set $grown (i32.add (global.get $grown) (i32.const 1)))))
    (local.get $old))
  (func (export "size") (result i32) (memory.size)))
