/*
 * reactor-counter-c: named counters in the function's sealed state.
 *
 * The request is a counter name (1 to 64 bytes). The function adds one to
 * the counter with compare-and-set, retrying while other invocations win
 * the race, and answers with the new value in decimal. A request that
 * starts with '?' reads the counter named by the rest without changing it.
 *
 * The manifest must grant the state capability ("capabilities":
 * {"state": true}) and use the reactor ABI. See docs/state.md.
 */
#include "cloister.h"

#include <string.h>

/* The counter is stored as 8 bytes, little endian. */
static uint64_t decode(const unsigned char *b) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | b[i];
    return v;
}

static void encode(unsigned char *b, uint64_t v) {
    for (int i = 0; i < 8; i++, v >>= 8)
        b[i] = (unsigned char)v;
}

static int answer(uint64_t v) {
    char out[24];
    int n = 0;
    char tmp[24];
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v > 0);
    for (int i = 0; i < n; i++)
        out[i] = tmp[n - 1 - i];
    return cloister_output(out, (size_t)n) == 0 ? 0 : 1;
}

int32_t cloister_handle(void) {
    size_t n;
    unsigned char *name = cloister_input(&n);
    if (name == NULL)
        return 1;
    int read_only = n > 0 && name[0] == '?';
    unsigned char *key = name + read_only;
    size_t key_len = n - (size_t)read_only;
    if (key_len == 0 || key_len > 64) {
        free(name);
        return 2;
    }
    unsigned char cur[8], next[8];
    uint64_t v;
    for (;;) {
        int32_t got = cloister_kv_get(key, (int32_t)key_len, cur, sizeof cur);
        if (got == CLOISTER_KV_NOT_FOUND) {
            v = 0;
        } else if (got == 8) {
            v = decode(cur);
        } else {
            free(name);
            return 3; /* denied, failed, or not a counter */
        }
        if (read_only)
            break;
        encode(next, v + 1);
        int32_t swapped = got == CLOISTER_KV_NOT_FOUND
            ? cloister_kv_cas(key, (int32_t)key_len, NULL, -1, next, 8)
            : cloister_kv_cas(key, (int32_t)key_len, cur, 8, next, 8);
        if (swapped == 1) {
            v++;
            break;
        }
        if (swapped != 0) {
            free(name);
            return 4;
        }
    }
    free(name);
    return answer(v);
}
