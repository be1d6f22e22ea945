;; data_drop copies a passive data segment into memory with memory.init,
;; then drops it with data.drop: Prepare reports DropsData (and not
;; MemoryGrows or MutatesTables).
;;
;; Build: wat2wasm data_drop.wat -o data_drop.wasm
(module
  (memory 1)
  (data $d "hello")
  ;; load copies the segment to address 16 and returns the first byte;
  ;; a second call traps, as the segment is gone.
  (func (export "load") (result i32)
    (memory.init $d (i32.const 16) (i32.const 0) (i32.const 5))
    (data.drop $d)
    (i32.load8_u (i32.const 16))))
