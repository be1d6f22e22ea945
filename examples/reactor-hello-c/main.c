/*
 * reactor-hello-c: examples/hello-js written in C as a reactor (reactor ABI
 * v1, docs/reactor-abi.md), so that the JavaScript runtime can be measured
 * beside the same function in WebAssembly (internal/jsrt benchmarks).
 *
 * The request is a JSON object; the response is
 *
 *     {"greeting":"Hello, NAME!","calls":N}
 *
 * where NAME is the request's "name" string (as written, escapes kept) or
 * "stranger", and N counts the calls this instance has served: always 1 on
 * the platform, which resets the instance before every call. The scan for
 * "name" is deliberately small: it finds the first "name" key followed by
 * a string value, which is exact for the flat objects the benchmarks send.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cloister.h"

static uint32_t calls;

/* name_value finds "name": "..." in the request and returns the start of
 * the string's contents and its length, or NULL. */
static const char *name_value(const char *in, size_t n, size_t *len) {
    const char *end = in + n;
    for (const char *p = in; p + 6 <= end; p++) {
        if (memcmp(p, "\"name\"", 6) != 0)
            continue;
        const char *q = p + 6;
        while (q < end && (*q == ' ' || *q == '\t' || *q == '\n' || *q == '\r'))
            q++;
        if (q >= end || *q++ != ':')
            continue;
        while (q < end && (*q == ' ' || *q == '\t' || *q == '\n' || *q == '\r'))
            q++;
        if (q >= end || *q++ != '"')
            continue;
        const char *s = q;
        while (q < end && *q != '"') {
            if (*q == '\\' && q + 1 < end)
                q++;
            q++;
        }
        if (q >= end)
            return NULL;
        *len = (size_t)(q - s);
        return s;
    }
    return NULL;
}

int32_t cloister_handle(void) {
    calls++;
    size_t n;
    char *in = cloister_input(&n);
    if (in == NULL)
        return 1;
    size_t len;
    const char *name = name_value(in, n, &len);
    if (name == NULL || len == 0)
        name = "stranger", len = 8;
    char *out = malloc(len + 64);
    if (out == NULL)
        return 1;
    size_t k = 0;
    memcpy(out + k, "{\"greeting\":\"Hello, ", 20), k += 20;
    memcpy(out + k, name, len), k += len;
    memcpy(out + k, "!\",\"calls\":", 11), k += 11;
    char digits[10];
    int d = 0;
    uint32_t c = calls;
    do
        digits[d++] = (char)('0' + c % 10);
    while ((c /= 10) != 0);
    while (d > 0)
        out[k++] = digits[--d];
    out[k++] = '}';
    int r = cloister_output(out, k);
    free(out);
    free(in);
    return r == 0 ? 0 : 1;
}
