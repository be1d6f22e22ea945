;; globals imports two globals and defines one of every value type, some
;; exported already. Prepare must export the module's own mutable globals
;; (indices 3 to 9) and nothing else: not the imported mutable global 1,
;; not the immutable global 2. Global 3 is exported twice already, under
;; other names; the pass adds its own name.
;;
;; Build: wat2wasm globals.wat -o globals.wasm
(module
  (import "env" "base" (global $base i32))                 ;; 0
  (import "env" "shared" (global $shared (mut i64)))       ;; 1
  (global $const i32 (i32.const 1))                        ;; 2
  (global $b (mut i32) (global.get $base))                 ;; 3
  (global $c (mut i64) (i64.const -1))                     ;; 4
  (global $d (mut f32) (f32.const 1.5))                    ;; 5
  (global $e (mut f64) (f64.const -2.25))                  ;; 6
  (global $v (mut v128) (v128.const i32x4 1 2 3 4))        ;; 7
  (global $fr (mut funcref) (ref.null func))               ;; 8
  (global $er (mut externref) (ref.null extern))           ;; 9
  (export "const" (global $const))
  (export "b" (global $b))
  (export "b_too" (global $b))
  (export "shared" (global $shared))
  (func $bump (export "bump")
    (global.set $b (i32.add (global.get $b) (global.get $const)))
    (global.set $c (i64.add (global.get $c) (global.get $shared)))
    (global.set $d (f32.mul (global.get $d) (f32.const 2)))
    (global.set $e (f64.neg (global.get $e)))
    (global.set $v (i32x4.add (global.get $v) (global.get $v)))
    (global.set $fr (ref.func $bump))))
