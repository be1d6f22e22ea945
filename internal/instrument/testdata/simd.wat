;; simd computes with vector instructions of every immediate shape: memory
;; arguments, lanes, v128.const and i8x16.shuffle. Its accumulator is a
;; mutable v128 global.
;;
;; Build: wat2wasm simd.wat -o simd.wasm
(module
  (memory 1)
  (global $acc (mut v128) (v128.const i32x4 0 0 0 0))
  ;; dot stores four i32 lanes at 0 and 16, then returns the dot product
  ;; of (a b c d) and (1 2 3 4), accumulated into $acc on the way.
  (func (export "dot") (param $a i32) (param $b i32) (param $c i32) (param $d i32) (result i32)
    (local $v v128)
    (local.set $v (i32x4.splat (local.get $a)))
    (local.set $v (i32x4.replace_lane 1 (local.get $v) (local.get $b)))
    (local.set $v (i32x4.replace_lane 2 (local.get $v) (local.get $c)))
    (local.set $v (i32x4.replace_lane 3 (local.get $v) (local.get $d)))
    (v128.store (i32.const 0) (local.get $v))
    (v128.store offset=16 (i32.const 0) (v128.const i32x4 1 2 3 4))
    (local.set $v (i32x4.mul (v128.load (i32.const 0)) (v128.load offset=16 align=4 (i32.const 0))))
    (global.set $acc (i32x4.add (global.get $acc) (local.get $v)))
    ;; Sum the lanes: swap halves and add, then swap pairs and add.
    (local.set $v (i32x4.add (local.get $v)
      (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 (local.get $v) (local.get $v))))
    (local.set $v (i32x4.add (local.get $v)
      (i8x16.shuffle 4 5 6 7 0 1 2 3 12 13 14 15 8 9 10 11 (local.get $v) (local.get $v))))
    (i32x4.extract_lane 0 (local.get $v)))
  ;; lane reads byte lane 5 of memory at 0 through a lane load.
  (func (export "lane") (result i32)
    (i8x16.extract_lane_u 5 (v128.load8_lane 5 (i32.const 5) (v128.const i64x2 0 0)))))
