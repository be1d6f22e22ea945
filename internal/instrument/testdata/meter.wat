;; meter holds small functions whose instruction counts are counted by hand
;; in meter_test.go (TestMeterCounts), under the cost model of the package
;; doc: every instruction costs 1, except block, loop, else and end, which
;; cost 0. The cost of each instruction is in the comment beside it.
;;
;; Build: wat2wasm meter.wat -o meter.wasm
(module
  (type $unary (func (param i32) (result i32)))
  (table 1 funcref)
  (elem (i32.const 0) $double)
  (memory 1)
  (global $depth (export "depth") (mut i32) (i32.const 0))

  ;; straight: 5.
  (func (export "straight") (param i32 i32) (result i32)
    local.get 0 ;; 1
    local.get 1 ;; 1
    i32.add     ;; 1
    i32.const 3 ;; 1
    i32.mul)    ;; 1

  ;; if_else: 5 if $c is not 0 (10+1), 7 if it is (20+1+1).
  (func (export "if_else") (param $c i32) (result i32)
    local.get $c      ;; 1
    if (result i32)   ;; 1
      i32.const 10    ;; 1
    else
      i32.const 20    ;; 1
      i32.const 1     ;; 1
      i32.add         ;; 1
    end
    i32.const 1       ;; 1
    i32.add)          ;; 1

  ;; sum: 1+2+...+$n, in 12 per iteration, 4 for the last test, 1 after:
  ;; 12n + 5.
  (func $sum (export "sum") (param $n i32) (result i32)
    (local $i i32) (local $s i32)
    block $exit
      loop $top
        local.get $i  ;; 1
        local.get $n  ;; 1
        i32.ge_u      ;; 1
        br_if $exit   ;; 1
        local.get $i  ;; 1
        i32.const 1   ;; 1
        i32.add       ;; 1
        local.tee $i  ;; 1
        local.get $s  ;; 1
        i32.add       ;; 1
        local.set $s  ;; 1
        br $top       ;; 1
        i32.const 99  ;; dead: never run, never charged
        drop
      end
    end
    local.get $s)     ;; 1

  ;; countdown: a loop whose back edge is a br_if, $n >= 1 times: 5n + 1.
  (func (export "countdown") (param $n i32) (result i32)
    loop $l
      local.get $n   ;; 1
      i32.const 1    ;; 1
      i32.sub        ;; 1
      local.tee $n   ;; 1
      br_if $l       ;; 1
    end
    local.get $n)    ;; 1

  ;; br_if: 5 if $c is not 0 (the branch is taken, result 8), 7 if it is
  ;; (result 9).
  (func (export "br_if") (param $c i32) (result i32)
    block $b (result i32)
      i32.const 7    ;; 1
      local.get $c   ;; 1
      br_if $b       ;; 1
      drop           ;; 1
      i32.const 8    ;; 1
    end
    i32.const 1      ;; 1
    i32.add)         ;; 1

  ;; br_table: 4 for $i = 0 (100) and $i = 2 (102), 6 for $i = 1 (102),
  ;; 7 otherwise (6).
  (func (export "br_table") (param $i i32) (result i32)
    block $d
      block $2
        block $1
          block $0
            local.get $i           ;; 1
            br_table $0 $1 $2 $d   ;; 1
          end
          i32.const 100            ;; 1
          return                   ;; 1
        end
        i32.const 101              ;; 1
        i32.const 1                ;; 1
        i32.add                    ;; 1
        return                     ;; 1
      end
      i32.const 102                ;; 1
      return                       ;; 1
    end
    i32.const 1                    ;; 1
    i32.const 2                    ;; 1
    i32.const 3                    ;; 1
    i32.add                        ;; 1
    i32.add)                       ;; 1

  ;; double: 3.
  (func $double (export "double") (type $unary)
    local.get 0   ;; 1
    local.get 0   ;; 1
    i32.add)      ;; 1

  ;; call: 4 here and 3 in double: 7.
  (func (export "call") (param $x i32) (result i32)
    local.get $x  ;; 1
    call $double  ;; 1
    i32.const 1   ;; 1
    i32.add)      ;; 1

  ;; call_indirect: 5 here and 3 in double: 8.
  (func (export "call_indirect") (param $x i32) (result i32)
    local.get $x                   ;; 1
    i32.const 0                    ;; 1
    call_indirect (type $unary)    ;; 1
    i32.const 1                    ;; 1
    i32.add)                       ;; 1

  ;; early: 5 if $x is 0 (an early return), 6 otherwise.
  (func (export "early") (param $x i32) (result i32)
    local.get $x   ;; 1
    i32.eqz        ;; 1
    if             ;; 1
      i32.const 0  ;; 1
      return       ;; 1
    end
    local.get $x   ;; 1
    i32.const 2    ;; 1
    i32.mul)       ;; 1

  ;; fact: $n!, recursively: 4 for 0, 9 more for each level: 9n + 4.
  (func $fact (export "fact") (param $n i64) (result i64)
    local.get $n        ;; 1
    i64.eqz             ;; 1
    if (result i64)     ;; 1
      i64.const 1       ;; 1
    else
      local.get $n      ;; 1
      local.get $n      ;; 1
      i64.const 1       ;; 1
      i64.sub           ;; 1
      call $fact        ;; 1
      i64.mul           ;; 1
    end)

  ;; nested: blocks that no branch targets are not basic blocks: 6, one
  ;; charge.
  (func (export "nested") (result i32)
    block (result i32)
      block (result i32)
        nop           ;; 1
        i32.const 1   ;; 1
      end
      i32.const 2     ;; 1
      i32.add         ;; 1
    end
    i32.const 3       ;; 1
    i32.add)          ;; 1

  ;; arms_branch: both arms of an if end in a branch, one of them to the
  ;; if's own label, so code after the if runs only when a branch goes
  ;; there: 5 if $c is not 0 (10); 7 if both are 0 (10); 5 if only $d is
  ;; not 0 (20).
  (func (export "arms_branch") (param $c i32) (param $d i32) (result i32)
    block $out
      local.get $c     ;; 1
      if $l            ;; 1
        br $l          ;; 1
      else
        local.get $d   ;; 1
        br_if $out     ;; 1
        br $l          ;; 1
      end
      i32.const 10     ;; 1
      return           ;; 1
    end
    i32.const 20)      ;; 1

  ;; multi: a loop with two parameters and two results, and an if with a
  ;; parameter and two results. It sums 1..$n (n >= 1) in 11 per
  ;; iteration, then adds i (n) to the sum, and 1000 if the sum is even:
  ;; 2 + 11n + 4 + (1 if the sum is odd, 3 if even) + 1.
  (func (export "multi") (param $n i32) (result i32)
    (local $i i32) (local $s i32)
    i32.const 0                           ;; 1  i
    i32.const 0                           ;; 1  s
    loop $next (param i32 i32) (result i32 i32)
      local.set $s                        ;; 1
      i32.const 1                         ;; 1
      i32.add                             ;; 1
      local.tee $i                        ;; 1
      local.get $s                        ;; 1
      local.get $i                        ;; 1
      i32.add                             ;; 1
      local.get $i                        ;; 1
      local.get $n                        ;; 1
      i32.lt_u                            ;; 1
      br_if $next                         ;; 1
    end
    local.tee $s                          ;; 1
    i32.const 1                           ;; 1
    i32.and                               ;; 1
    if (param i32) (result i32 i32)       ;; 1
      local.get $s                        ;; 1
    else
      i32.const 1000                      ;; 1
      i32.add                             ;; 1
      local.get $s                        ;; 1
    end
    i32.add)                              ;; 1

  ;; trap: divides by $x, which traps for 0: 7 if it does not.
  (func $trap (export "trap") (param $x i32) (result i32)
    i32.const 12   ;; 1
    local.get $x   ;; 1
    i32.div_u      ;; 1  traps if $x is 0
    i32.const 1    ;; 1
    i32.add        ;; 1
    i32.const 0    ;; 1
    i32.add)       ;; 1

  ;; store: a memory access, which may trap, mid block: 3.
  (func (export "store") (param $a i32)
    local.get $a   ;; 1
    local.get $a   ;; 1
    i32.store)     ;; 1

  ;; calls_trap: sum(5) (65), then trap($x): 2 + 65 + 3 + 7 = 77 if $x is
  ;; not 0. If it is 0, trap stops at its third instruction: 73.
  (func (export "calls_trap") (param $x i32) (result i32)
    i32.const 5    ;; 1
    call $sum      ;; 1
    drop           ;; 1
    local.get $x   ;; 1
    call $trap)    ;; 1

;; recurse: recurses until the stack overflows, counting the levels in
  ;; $depth: 5 per level.
  (func $recurse (export "recurse")
    global.get $depth  ;; 1
    i32.const 1        ;; 1
    i32.add            ;; 1
    global.set $depth  ;; 1
    call $recurse)     ;; 1

  ;; abort: 3, the last one traps.
  (func (export "abort")
    i32.const 1    ;; 1
    drop           ;; 1
    unreachable)   ;; 1
)
