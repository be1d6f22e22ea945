/*
 * sha256-c: an example Cloister function written in C and built as a WASI
 * command. It reads all of stdin and writes the lowercase hex SHA-256 digest
 * of it, followed by a newline, to stdout.
 *
 * SHA-256 is implemented here directly from FIPS 180-4 (section 6.2).
 */
#include <stdint.h>
#include <string.h>
#include <unistd.h>

/* FIPS 180-4 4.2.2: the first 32 bits of the fractional parts of the cube
 * roots of the first 64 primes. */
static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1,
    0x923f82a4, 0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3,
    0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786,
    0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147,
    0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
    0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
    0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a,
    0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208,
    0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

struct sha256 {
    uint32_t h[8];      /* intermediate hash value H(i) */
    uint8_t block[64];  /* pending partial message block */
    size_t used;        /* bytes pending in block */
    uint64_t length;    /* total message length in bytes */
};

static uint32_t rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

static uint32_t load_be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
           (uint32_t)p[3];
}

static void store_be32(uint8_t *p, uint32_t x) {
    p[0] = (uint8_t)(x >> 24);
    p[1] = (uint8_t)(x >> 16);
    p[2] = (uint8_t)(x >> 8);
    p[3] = (uint8_t)x;
}

/* FIPS 180-4 6.2.2: process one 512-bit message block. */
static void sha256_block(struct sha256 *s, const uint8_t *m) {
    uint32_t w[64];
    for (int t = 0; t < 16; t++)
        w[t] = load_be32(m + 4 * t);
    for (int t = 16; t < 64; t++) {
        uint32_t s0 = rotr(w[t - 15], 7) ^ rotr(w[t - 15], 18) ^ (w[t - 15] >> 3);
        uint32_t s1 = rotr(w[t - 2], 17) ^ rotr(w[t - 2], 19) ^ (w[t - 2] >> 10);
        w[t] = s1 + w[t - 7] + s0 + w[t - 16];
    }

    uint32_t a = s->h[0], b = s->h[1], c = s->h[2], d = s->h[3];
    uint32_t e = s->h[4], f = s->h[5], g = s->h[6], h = s->h[7];
    for (int t = 0; t < 64; t++) {
        uint32_t S1 = rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25);
        uint32_t ch = (e & f) ^ (~e & g);
        uint32_t t1 = h + S1 + ch + K[t] + w[t];
        uint32_t S0 = rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22);
        uint32_t maj = (a & b) ^ (a & c) ^ (b & c);
        uint32_t t2 = S0 + maj;
        h = g;
        g = f;
        f = e;
        e = d + t1;
        d = c;
        c = b;
        b = a;
        a = t1 + t2;
    }
    s->h[0] += a; s->h[1] += b; s->h[2] += c; s->h[3] += d;
    s->h[4] += e; s->h[5] += f; s->h[6] += g; s->h[7] += h;
}

/* FIPS 180-4 5.3.3: initial hash value H(0). */
static void sha256_init(struct sha256 *s) {
    static const uint32_t h0[8] = {
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
        0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
    };
    memcpy(s->h, h0, sizeof h0);
    s->used = 0;
    s->length = 0;
}

static void sha256_update(struct sha256 *s, const uint8_t *p, size_t n) {
    s->length += n;
    while (n > 0) {
        size_t take = sizeof s->block - s->used;
        if (take > n)
            take = n;
        memcpy(s->block + s->used, p, take);
        s->used += take;
        p += take;
        n -= take;
        if (s->used == sizeof s->block) {
            sha256_block(s, s->block);
            s->used = 0;
        }
    }
}

/* FIPS 180-4 5.1.1: append a 1 bit, zero bits, and the 64-bit big-endian
 * message length in bits, then emit H(N) as the digest. */
static void sha256_final(struct sha256 *s, uint8_t digest[32]) {
    uint64_t bits = s->length * 8;
    s->block[s->used++] = 0x80;
    if (s->used > 56) {
        memset(s->block + s->used, 0, 64 - s->used);
        sha256_block(s, s->block);
        s->used = 0;
    }
    memset(s->block + s->used, 0, 56 - s->used);
    store_be32(s->block + 56, (uint32_t)(bits >> 32));
    store_be32(s->block + 60, (uint32_t)bits);
    sha256_block(s, s->block);
    for (int i = 0; i < 8; i++)
        store_be32(digest + 4 * i, s->h[i]);
}

/* Reports a failure on stderr. (perror/stdio would double the module size.) */
static int fail(const char *msg) {
    write(STDERR_FILENO, msg, strlen(msg));
    return 1;
}

int main(void) {
    static uint8_t buf[64 * 1024];
    struct sha256 s;
    sha256_init(&s);
    for (;;) {
        ssize_t n = read(STDIN_FILENO, buf, sizeof buf);
        if (n == 0)
            break;
        if (n < 0)
            return fail("sha256-c: error reading stdin\n");
        sha256_update(&s, buf, (size_t)n);
    }

    uint8_t digest[32];
    sha256_final(&s, digest);

    static const char hex[] = "0123456789abcdef";
    char out[65];
    for (int i = 0; i < 32; i++) {
        out[2 * i] = hex[digest[i] >> 4];
        out[2 * i + 1] = hex[digest[i] & 0x0f];
    }
    out[64] = '\n';
    if (write(STDOUT_FILENO, out, sizeof out) != (ssize_t)sizeof out)
        return fail("sha256-c: error writing stdout\n");
    return 0;
}
