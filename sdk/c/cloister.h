/*
 * cloister.h: the guest side of the Cloister reactor ABI v1 for C
 * (wasi-libc, clang --target=wasm32-wasi -mexec-model=reactor).
 * The ABI is specified in docs/reactor-abi.md.
 *
 * Header only: include it and define cloister_handle (and, optionally,
 * cloister_init). The declarations below carry the export names, so plain
 * definitions are exported:
 *
 *     #include "cloister.h"
 *
 *     void cloister_init(void) { ... one-time set-up, before the snapshot ... }
 *
 *     int32_t cloister_handle(void) {
 *         size_t n;
 *         unsigned char *in = cloister_input(&n);
 *         if (in == NULL)
 *             return 1;
 *         ... compute the response ...
 *         int rc = cloister_output(out, out_len);
 *         free(in);
 *         return rc == 0 ? 0 : 1;
 *     }
 *
 * Build:
 *
 *     clang --target=wasm32-wasi -mexec-model=reactor -O2 -I sdk/c \
 *         -Wl,--strip-all -o f.wasm main.c
 *
 * The platform calls _initialize (wasi-libc's constructors), then
 * cloister_init, snapshots the instance, and calls cloister_handle once per
 * request, each time from the snapshot: static variables start every
 * request with the values they had after cloister_init.
 */
#ifndef CLOISTER_H
#define CLOISTER_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#ifdef __cplusplus
extern "C" {
#endif

/* CLOISTER_IMPORT(name) declares a host function of module "cloister". */
#define CLOISTER_IMPORT(name) \
    __attribute__((import_module("cloister"), import_name(name)))

/* CLOISTER_EXPORT(name) exports a function under name. */
#define CLOISTER_EXPORT(name) __attribute__((export_name(name)))

/* --- Host functions (module "cloister"); every value is an i32. --- */

/* The request's length in bytes (0 during cloister_init). */
CLOISTER_IMPORT("input_len") int32_t cloister_input_len(void);

/* Copies min(len, input length) bytes of the request to ptr and returns the
 * number n copied, or -1 if [ptr, ptr+n) is outside linear memory. */
CLOISTER_IMPORT("input_read") int32_t cloister_input_read(void *ptr, int32_t len);

/* Appends len bytes at ptr to the response. Returns 0, or -1 if the
 * response would exceed the function's output limit (the request then fails
 * with output_too_large; return non-zero from cloister_handle). */
CLOISTER_IMPORT("output_write") int32_t cloister_output_write(const void *ptr, int32_t len);

/* --- Exports the function defines. --- */

/* Optional: one-time initialisation, run after _initialize and before the
 * snapshot. */
CLOISTER_EXPORT("cloister_init") void cloister_init(void);

/* Required: handles one request. Returns 0 on success; any other value fails
 * the request with that function error code. Write diagnostics to stderr
 * (the function's log), never to stdout: neither is the response. */
CLOISTER_EXPORT("cloister_handle") int32_t cloister_handle(void);

/* --- Helpers. --- */

/* cloister_input reads the whole request into a buffer from malloc, which
 * the caller frees, and stores its length in *len. The buffer has one extra
 * byte set to 0, so text input is also a C string. Returns NULL (and leaves
 * *len alone) if memory runs out or the host misbehaves. */
static inline void *cloister_input(size_t *len) {
    int32_t n = cloister_input_len();
    if (n < 0)
        return NULL;
    unsigned char *buf = (unsigned char *)malloc((size_t)n + 1);
    if (buf == NULL)
        return NULL;
    if (n > 0 && cloister_input_read(buf, n) != n) {
        free(buf);
        return NULL;
    }
    buf[n] = 0;
    *len = (size_t)n;
    return buf;
}

/* cloister_output appends len bytes at p to the response. Returns 0, or -1
 * if the output limit would be exceeded. */
static inline int cloister_output(const void *p, size_t len) {
    if (len == 0)
        return 0;
    if (len > INT32_MAX)
        return -1;
    return cloister_output_write(p, (int32_t)len) == 0 ? 0 : -1;
}

#ifdef __cplusplus
}
#endif

#endif /* CLOISTER_H */
