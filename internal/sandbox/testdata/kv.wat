;; A reactor that drives the state host functions (kv_*), for the sandbox
;; tests and the YCSB benchmarks (bench/ycsb_test.go).
;;
;; Request: op (1 byte) | key length (1 byte) | key | rest
;;   'g'  get key                     -> code, then the value when code >= 0
;;   'p'  put key = rest              -> code
;;   'd'  delete key                  -> code
;;   'l'  list prefix = key, start = rest -> code, then the list buffer
;;   'i'  increment key, a 4-byte little-endian counter, by compare-and-set
;;        in a loop until it wins     -> code (1), then the new counter
;;   'x'  get with a 0-byte buffer, then again with a big one (the retry path)
;;   'o'  put, get, cas, delete and list with pointers out of bounds -> the codes, 4 bytes each
;; Response: the host function's i32 result (4 bytes, little endian), then data.
(module
  (import "cloister" "input_len" (func $input_len (result i32)))
  (import "cloister" "input_read" (func $input_read (param i32 i32) (result i32)))
  (import "cloister" "output_write" (func $output_write (param i32 i32) (result i32)))
  (import "cloister" "kv_get" (func $kv_get (param i32 i32 i32 i32) (result i32)))
  (import "cloister" "kv_put" (func $kv_put (param i32 i32 i32 i32) (result i32)))
  (import "cloister" "kv_delete" (func $kv_delete (param i32 i32) (result i32)))
  (import "cloister" "kv_cas" (func $kv_cas (param i32 i32 i32 i32 i32 i32) (result i32)))
  (import "cloister" "kv_list" (func $kv_list (param i32 i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 3)

  ;; out writes the 4-byte code at 196600 and sends it.
  (func $out (param $c i32)
    (i32.store (i32.const 196600) (local.get $c))
    (drop (call $output_write (i32.const 196600) (i32.const 4))))

  (func (export "cloister_handle") (result i32)
    (local $n i32) (local $op i32) (local $klen i32) (local $rest i32) (local $rlen i32) (local $r i32)
    (local.set $n (call $input_len))
    (if (i32.gt_u (local.get $n) (i32.const 65536)) (then (return (i32.const 9))))
    (drop (call $input_read (i32.const 0) (local.get $n)))
    (local.set $op (i32.load8_u (i32.const 0)))
    (local.set $klen (i32.load8_u (i32.const 1)))
    (local.set $rest (i32.add (i32.const 2) (local.get $klen)))
    (local.set $rlen (i32.sub (local.get $n) (local.get $rest)))
    ;; get
    (if (i32.eq (local.get $op) (i32.const 103)) (then
      (local.set $r (call $kv_get (i32.const 2) (local.get $klen) (i32.const 65536) (i32.const 65536)))
      (call $out (local.get $r))
      (if (i32.ge_s (local.get $r) (i32.const 0)) (then
        (drop (call $output_write (i32.const 65536) (local.get $r)))))
      (return (i32.const 0))))
    ;; get through the retry path
    (if (i32.eq (local.get $op) (i32.const 120)) (then
      (local.set $r (call $kv_get (i32.const 2) (local.get $klen) (i32.const 65536) (i32.const 0)))
      (if (i32.gt_s (local.get $r) (i32.const 0)) (then
        (local.set $r (call $kv_get (i32.const 2) (local.get $klen) (i32.const 65536) (i32.const 65536)))))
      (call $out (local.get $r))
      (if (i32.ge_s (local.get $r) (i32.const 0)) (then
        (drop (call $output_write (i32.const 65536) (local.get $r)))))
      (return (i32.const 0))))
    ;; out of bounds
    (if (i32.eq (local.get $op) (i32.const 111)) (then
      (call $out (call $kv_put (i32.const -16) (i32.const 32) (i32.const 0) (i32.const 1)))
      (call $out (call $kv_put (i32.const 2) (local.get $klen) (i32.const 196000) (i32.const 1000)))
      (call $out (call $kv_get (i32.const 2) (local.get $klen) (i32.const 196600) (i32.const 65536)))
      (call $out (call $kv_cas (i32.const 2) (local.get $klen) (i32.const -4) (i32.const 8) (i32.const 0) (i32.const 1)))
      (call $out (call $kv_delete (i32.const 196607) (i32.const 2)))
      (call $out (call $kv_list (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 196000) (i32.const 1000)))
      (return (i32.const 0))))
    ;; put
    (if (i32.eq (local.get $op) (i32.const 112)) (then
      (call $out (call $kv_put (i32.const 2) (local.get $klen) (local.get $rest) (local.get $rlen)))
      (return (i32.const 0))))
    ;; delete
    (if (i32.eq (local.get $op) (i32.const 100)) (then
      (call $out (call $kv_delete (i32.const 2) (local.get $klen)))
      (return (i32.const 0))))
    ;; list
    (if (i32.eq (local.get $op) (i32.const 108)) (then
      (local.set $r (call $kv_list (i32.const 2) (local.get $klen) (local.get $rest) (local.get $rlen) (i32.const 65536) (i32.const 65536)))
      (call $out (local.get $r))
      (if (i32.gt_s (local.get $r) (i32.const 0)) (then
        (drop (call $output_write (i32.const 65536) (local.get $r)))))
      (return (i32.const 0))))
    ;; increment
    (if (i32.eq (local.get $op) (i32.const 105)) (then
      (loop $retry
        (local.set $r (call $kv_get (i32.const 2) (local.get $klen) (i32.const 65536) (i32.const 4)))
        (if (i32.eq (local.get $r) (i32.const -1))
          (then
            (i32.store (i32.const 131072) (i32.const 1))
            (local.set $r (call $kv_cas (i32.const 2) (local.get $klen) (i32.const 0) (i32.const -1) (i32.const 131072) (i32.const 4))))
          (else
            (if (i32.ne (local.get $r) (i32.const 4)) (then (call $out (local.get $r)) (return (i32.const 0))))
            (i32.store (i32.const 131072) (i32.add (i32.load (i32.const 65536)) (i32.const 1)))
            (local.set $r (call $kv_cas (i32.const 2) (local.get $klen) (i32.const 65536) (i32.const 4) (i32.const 131072) (i32.const 4)))))
        (br_if $retry (i32.eqz (local.get $r))))
      (call $out (local.get $r))
      (drop (call $output_write (i32.const 131072) (i32.const 4)))
      (return (i32.const 0))))
    (i32.const 8))
)
