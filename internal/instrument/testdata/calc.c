/*
 * Build: clang --target=wasm32-wasi -O2 -Wl,--strip-all -o calc.wasm calc.c
 *
 * calc is a metering fixture (internal/instrument): a WASI command that
 * reads a prefix expression from stdin and prints its value, in decimal,
 * and a newline. Evaluation recurses as deep as the expression nests, and
 * the operator switch compiles to a br_table. An expression is a decimal
 * number, or an operator letter and its operands, separated by spaces:
 *
 *   a x y    x + y            f x y    max(x, y)
 *   b x y    x - y            g x y    min(x, y)
 *   c x y    x * y            h x y    x ^ y
 *   d x y    x / y            i x      -x
 *   e x y    x % y            j x y z  y if x is not 0, else z
 *
 * Arithmetic wraps at 64 bits. Division and remainder by 0 (and
 * INT64_MIN / -1) trap. Exit codes: 0, 1 for a syntax error, 2 for input
 * left over after the expression, 3 for input over 1 MiB.
 */
#include <stdint.h>
#include <unistd.h>

static char buf[1 << 20];
static size_t len, pos;
static int bad;

static void skip(void) {
    while (pos < len && buf[pos] == ' ')
        pos++;
}

static int isdigit_(char c) { return c >= '0' && c <= '9'; }

static void check_div(int64_t x, int64_t y) {
    if (y == 0 || (y == -1 && x == INT64_MIN))
        __builtin_trap();
}

static int64_t expr(void) {
    skip();
    if (pos >= len) {
        bad = 1;
        return 0;
    }
    char c = buf[pos++];
    if (isdigit_(c)) {
        uint64_t v = (uint64_t)(c - '0');
        while (pos < len && isdigit_(buf[pos]))
            v = v * 10 + (uint64_t)(buf[pos++] - '0');
        return (int64_t)v;
    }
    int64_t x, y, z;
    switch (c) {
    case 'a':
        x = expr();
        return (int64_t)((uint64_t)x + (uint64_t)expr());
    case 'b':
        x = expr();
        return (int64_t)((uint64_t)x - (uint64_t)expr());
    case 'c':
        x = expr();
        return (int64_t)((uint64_t)x * (uint64_t)expr());
    case 'd':
        x = expr();
        y = expr();
        check_div(x, y);
        return x / y;
    case 'e':
        x = expr();
        y = expr();
        check_div(x, y);
        return x % y;
    case 'f':
        x = expr();
        y = expr();
        return x > y ? x : y;
    case 'g':
        x = expr();
        y = expr();
        return x < y ? x : y;
    case 'h':
        x = expr();
        return x ^ expr();
    case 'i':
        return (int64_t)(0 - (uint64_t)expr());
    case 'j':
        x = expr();
        y = expr();
        z = expr();
        return x ? y : z;
    default:
        bad = 1;
        return 0;
    }
}

static void put(const char *s, size_t n) {
    while (n > 0) {
        ssize_t w = write(1, s, n);
        if (w <= 0)
            return;
        s += w;
        n -= (size_t)w;
    }
}

int main(void) {
    for (;;) {
        if (len == sizeof buf)
            return 3;
        ssize_t n = read(0, buf + len, sizeof buf - len);
        if (n < 0)
            return 1;
        if (n == 0)
            break;
        len += (size_t)n;
    }
    int64_t v = expr();
    if (bad)
        return 1;
    skip();
    while (pos < len && buf[pos] == '\n')
        pos++;
    if (pos != len)
        return 2;
    char out[24];
    size_t i = sizeof out;
    out[--i] = '\n';
    uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
    do {
        out[--i] = (char)('0' + u % 10);
        u /= 10;
    } while (u != 0);
    if (v < 0)
        out[--i] = '-';
    put(out + i, sizeof out - i);
    return 0;
}
