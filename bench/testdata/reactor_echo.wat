;; reactor_echo is the smallest useful reactor for the Cloister reactor ABI v1
;; (docs/reactor-abi.md): cloister_handle copies the request to the response.
;; BenchmarkInvoke/reactor-session calls it, so that the pooled sandbox and its
;; reset to the snapshot are measured end to end, against the WASI-command echo
;; (internal/sandbox/testdata/echo.wat) that the other modes call.
;; Layout: one 64 KiB page; the request is read to 1024, so it may be up to
;; 63 KiB. Returns 1 if the request is too long or a host call fails.
(module
  (import "cloister" "input_len" (func $input_len (result i32)))
  (import "cloister" "input_read" (func $input_read (param i32 i32) (result i32)))
  (import "cloister" "output_write" (func $output_write (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "cloister_handle") (result i32)
    (local $n i32)
    (local.set $n (call $input_len))
    (if (i32.gt_u (local.get $n) (i32.const 64512))
      (then (return (i32.const 1))))
    (if (i32.ne (call $input_read (i32.const 1024) (local.get $n)) (local.get $n))
      (then (return (i32.const 1))))
    (if (call $output_write (i32.const 1024) (local.get $n))
      (then (return (i32.const 1))))
    (i32.const 0)))
