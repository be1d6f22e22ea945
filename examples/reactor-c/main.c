/*
 * reactor-c: an example Cloister function written in C and built as a
 * reactor for the reactor ABI v1 (docs/reactor-abi.md), using sdk/c.
 *
 * cloister_init computes the CRC-32 lookup table once, before the platform
 * snapshots the instance. Each request's response is the CRC-32 (IEEE 802.3,
 * the one of zlib and Go's hash/crc32.ChecksumIEEE) of the whole request as
 * 8 lowercase hex digits, a space, and "calls=N", where N counts the
 * requests this instance has handled:
 *
 *     123456789  ->  cbf43926 calls=1
 *
 * With the platform's reset to the snapshot, N is always 1.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cloister.h"

/* crc_table[b] is the CRC-32 of the byte b (reflected polynomial
 * 0xedb88320); filled by cloister_init. */
static uint32_t crc_table[256];
static int initialised;

/* calls counts the requests handled since the snapshot. */
static uint32_t calls;

void cloister_init(void) {
    for (uint32_t b = 0; b < 256; b++) {
        uint32_t c = b;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
        crc_table[b] = c;
    }
    initialised = 1;
}

static uint32_t crc32(const unsigned char *p, size_t n) {
    uint32_t c = 0xffffffffu;
    while (n--)
        c = crc_table[(c ^ *p++) & 0xff] ^ (c >> 8);
    return c ^ 0xffffffffu;
}

/* logmsg writes a line to stderr, the function's log. */
static void logmsg(const char *s) {
    (void)write(2, s, strlen(s));
    (void)write(2, "\n", 1);
}

int32_t cloister_handle(void) {
    if (!initialised) {
        logmsg("reactor-c: cloister_init was not called");
        return 2;
    }
    calls++;

    size_t n;
    unsigned char *in = cloister_input(&n);
    if (in == NULL) {
        logmsg("reactor-c: cannot read the request");
        return 1;
    }
    uint32_t sum = crc32(in, n);
    free(in);

    /* "xxxxxxxx calls=N": 8 + 7 + at most 10 digits. */
    char out[32];
    static const char hex[] = "0123456789abcdef";
    size_t len = 0;
    for (int shift = 28; shift >= 0; shift -= 4)
        out[len++] = hex[(sum >> shift) & 0xf];
    memcpy(out + len, " calls=", 7);
    len += 7;
    char digits[10];
    int nd = 0;
    uint32_t v = calls;
    do {
        digits[nd++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    while (nd > 0)
        out[len++] = digits[--nd];

    if (cloister_output(out, len) != 0) {
        logmsg("reactor-c: the response exceeds the output limit");
        return 1;
    }
    return 0;
}
