;; multi_value uses blocks, loops and ifs with parameters and several
;; results, typed by index into the type section, and a function with two
;; results.
;;
;; Build: wat2wasm multi_value.wat -o multi_value.wasm
(module
  (type $pair (func (param i32 i32) (result i32 i32)))
  ;; divmod returns the quotient and remainder of $a by $b.
  (func $divmod (export "divmod") (param $a i32) (param $b i32) (result i32 i32)
    (i32.div_u (local.get $a) (local.get $b))
    (i32.rem_u (local.get $a) (local.get $b)))
  ;; swap_if swaps its arguments when $c is not zero.
  (func (export "swap_if") (param $x i32) (param $y i32) (param $c i32) (result i32 i32)
    (local.get $x) (local.get $y)
    (if (type $pair) (param i32 i32) (result i32 i32) (local.get $c)
      (then (block (param i32 i32) (result i32 i32)
        (local.set $x) (local.set $y) (local.get $x) (local.get $y)))
      (else)))
  ;; sum_to adds 1..$n in a loop that carries (counter, sum) on the stack.
  (func (export "sum_to") (param $n i32) (result i32)
    (local $i i32) (local $s i32)
    (i32.const 0) (i32.const 0)
    (loop $next (param i32 i32) (result i32 i32)
      (local.set $s) (local.set $i)
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (local.set $s (i32.add (local.get $s) (local.get $i)))
      (local.get $i) (local.get $s)
      (br_if $next (i32.lt_u (local.get $i) (local.get $n))))
    (local.set $s) (drop)
    (local.get $s)))
