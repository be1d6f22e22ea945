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

/* --- State host functions (docs/state.md). A function whose manifest
 * grants "state" has a private key-value store; without the grant, and
 * during cloister_init, every call returns CLOISTER_KV_DENIED. Keys are 1
 * to 512 bytes; lengths of -1 mean "absent" where noted. --- */

#define CLOISTER_KV_NOT_FOUND (-1)    /* kv_get: no such key */
#define CLOISTER_KV_INVALID (-2)      /* bad pointer or length, or invalid key */
#define CLOISTER_KV_TOO_LARGE (-3)    /* the value is over the limit */
#define CLOISTER_KV_QUOTA (-4)        /* the function's keys or bytes would exceed its quota */
#define CLOISTER_KV_DENIED (-5)       /* no state (not granted, or during init) */
#define CLOISTER_KV_BUFFER_SMALL (-6) /* kv_list: the buffer cannot hold the next key */
#define CLOISTER_KV_FAILED (-7)       /* integrity or availability: the request fails */

/* Copies the value of key into buf if it fits in cap bytes, and returns its
 * length either way (call again with a bigger buffer if it is > cap); or
 * CLOISTER_KV_NOT_FOUND, or another code. */
CLOISTER_IMPORT("kv_get")
int32_t cloister_kv_get(const void *key, int32_t key_len, void *buf, int32_t cap);

/* Sets key to the value [val, val+len). Returns 0 or a code. */
CLOISTER_IMPORT("kv_put")
int32_t cloister_kv_put(const void *key, int32_t key_len, const void *val, int32_t len);

/* Deletes key. Returns 1 if it existed, 0 if not, or a code. */
CLOISTER_IMPORT("kv_delete")
int32_t cloister_kv_delete(const void *key, int32_t key_len);

/* Compare-and-set: if key's value is [old, old+old_len) (or the key is
 * absent, when old_len is -1), sets it to [new_val, new_val+new_len) (or
 * deletes it, when new_len is -1). Returns 1 if it did, 0 if the value
 * differed, or a code. */
CLOISTER_IMPORT("kv_cas")
int32_t cloister_kv_cas(const void *key, int32_t key_len, const void *old, int32_t old_len,
                        const void *new_val, int32_t new_len);

/* Lists the keys that start with prefix and sort after start (byte order),
 * as many as fit in buf: each a 4-byte little-endian length and the key's
 * bytes. Returns the bytes written (0: no more keys), or a code. Call
 * again with start set to the last key to go on. */
CLOISTER_IMPORT("kv_list")
int32_t cloister_kv_list(const void *prefix, int32_t prefix_len, const void *start, int32_t start_len,
                         void *buf, int32_t cap);

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

/* cloister_kv_get_alloc returns the value of key (key_len bytes) in a
 * buffer from malloc, which the caller frees, with one extra 0 byte, and
 * stores its length in *len. Returns NULL with *status set to
 * CLOISTER_KV_NOT_FOUND, another code, or CLOISTER_KV_FAILED when memory
 * runs out; *status is 0 on success. */
static inline void *cloister_kv_get_alloc(const void *key, size_t key_len, size_t *len, int32_t *status) {
    int32_t cap = 256;
    for (;;) {
        unsigned char *buf = (unsigned char *)malloc((size_t)cap + 1);
        if (buf == NULL) {
            *status = CLOISTER_KV_FAILED;
            return NULL;
        }
        int32_t n = cloister_kv_get(key, (int32_t)key_len, buf, cap);
        if (n < 0) {
            free(buf);
            *status = n;
            return NULL;
        }
        if (n <= cap) {
            buf[n] = 0;
            *len = (size_t)n;
            *status = 0;
            return buf;
        }
        free(buf);
        cap = n;
    }
}

#ifdef __cplusplus
}
#endif

#endif /* CLOISTER_H */
