/*
 * The Cloister JavaScript engine: QuickJS (Debian's source package, built by
 * scripts/jsengine.sh) behind the Cloister reactor ABI (docs/reactor-abi.md).
 *
 * cloister_init creates the QuickJS runtime and context once; the platform
 * snapshots the instance after it, so every request starts from an
 * interpreter that has already started up and has never seen a script. Each
 * request carries the function's script and its parameters:
 *
 *   "CJS1" | uint32 little-endian script length | script | params JSON
 *
 * or, to only compile the script (a syntax check at deploy), "CJSC" and the
 * length and script alone.
 *
 * cloister_handle evaluates the script, finds main (a global function main,
 * or module.exports.main / exports.main, or module.exports itself when it is
 * a function), calls it with the parsed parameters, waits for the returned
 * promise (running QuickJS's job queue) and answers with one tag byte and a
 * body:
 *
 *   'R' JSON.stringify of the result ("{}" when it is undefined)
 *   'E' {"name":..,"message":..,"stack":..} of an uncaught exception
 *   'O' nothing: QuickJS ran out of memory (the sandbox's memory limit)
 *   'X' a short text: the request itself was malformed
 *
 * cloister_handle always returns 0 unless the response could not be written
 * (1); the tag tells the worker (internal/jsrt) what happened. Nothing here
 * reaches the host but the reactor ABI's three functions and WASI's
 * fd_write (console.* to the log), clock_time_get (Date) and random_get
 * (Math.random), which the sandbox grants or fakes per the manifest.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <malloc.h>

#include "cloister.h"
#include "quickjs.h"

static JSRuntime *rt;
static JSContext *ctx;

/* QuickJS's own stack check; the linker gives the shadow stack 1 MiB and
 * puts it first in memory, so that an overflow past this check traps
 * instead of overwriting data. */
#define JS_STACK_BYTES (768 * 1024)

/* --- Allocation: wasi-libc's malloc, with an out-of-memory flag. --- */

static int out_of_memory;

static void account(JSMallocState *s, void *p, int sign)
{
    s->malloc_size += sign * (malloc_usable_size(p) + 8);
}

static void *cj_malloc(JSMallocState *s, size_t size)
{
    if (size > s->malloc_limit - s->malloc_size) {
        out_of_memory = 1;
        return NULL;
    }
    void *p = malloc(size);
    if (p == NULL) {
        out_of_memory = 1;
        return NULL;
    }
    s->malloc_count++;
    account(s, p, 1);
    return p;
}

static void cj_free(JSMallocState *s, void *p)
{
    if (p == NULL)
        return;
    s->malloc_count--;
    account(s, p, -1);
    free(p);
}

static void *cj_realloc(JSMallocState *s, void *p, size_t size)
{
    if (p == NULL)
        return size == 0 ? NULL : cj_malloc(s, size);
    if (size == 0) {
        cj_free(s, p);
        return NULL;
    }
    size_t old = malloc_usable_size(p) + 8;
    if (size > old && size - old > s->malloc_limit - s->malloc_size) {
        out_of_memory = 1;
        return NULL;
    }
    void *q = realloc(p, size);
    if (q == NULL) {
        out_of_memory = 1;
        return NULL;
    }
    s->malloc_size -= old;
    account(s, q, 1);
    return q;
}

static size_t cj_usable(const void *p)
{
    return malloc_usable_size((void *)p);
}

static const JSMallocFunctions cj_malloc_functions = {
    cj_malloc, cj_free, cj_realloc, cj_usable,
};

/* --- Host-facing built-ins. --- */

/* console.log / info / warn / error / debug: the arguments as strings,
 * separated by spaces, one line on stderr (the call's log). */
static JSValue js_console_log(JSContext *c, JSValueConst this_val, int argc, JSValueConst *argv)
{
    (void)this_val;
    for (int i = 0; i < argc; i++) {
        size_t n;
        const char *s = JS_ToCStringLen(c, &n, argv[i]);
        if (s == NULL)
            return JS_EXCEPTION;
        if (i > 0)
            (void)write(2, " ", 1);
        (void)write(2, s, n);
        JS_FreeCString(c, s);
    }
    (void)write(2, "\n", 1);
    return JS_UNDEFINED;
}

/* Math.random from WASI random_get at every call: real randomness when the
 * manifest grants random, the sandbox's deterministic stream otherwise.
 * (QuickJS's own generator would be seeded once, before the snapshot.) */
static JSValue js_math_random(JSContext *c, JSValueConst this_val, int argc, JSValueConst *argv)
{
    (void)c, (void)this_val, (void)argc, (void)argv;
    uint64_t v = 0;
    if (getentropy(&v, sizeof v) != 0)
        return JS_ThrowInternalError(c, "random source unavailable");
    return JS_NewFloat64(c, (double)(v >> 11) * (1.0 / 9007199254740992.0));
}

static void install_builtins(void)
{
    JSValue global = JS_GetGlobalObject(ctx);
    JSValue console = JS_NewObject(ctx);
    static const char *const names[] = {"log", "info", "warn", "error", "debug"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        JS_SetPropertyStr(ctx, console, names[i], JS_NewCFunction(ctx, js_console_log, names[i], 1));
    JS_SetPropertyStr(ctx, global, "console", console);
    JSValue math = JS_GetPropertyStr(ctx, global, "Math");
    JS_SetPropertyStr(ctx, math, "random", JS_NewCFunction(ctx, js_math_random, "random", 0));
    JS_FreeValue(ctx, math);
    JS_FreeValue(ctx, global);
}

void cloister_init(void)
{
    rt = JS_NewRuntime2(&cj_malloc_functions, NULL);
    if (rt == NULL)
        abort();
    JS_SetMaxStackSize(rt, JS_STACK_BYTES);
    ctx = JS_NewContext(rt);
    if (ctx == NULL)
        abort();
    install_builtins();
    JS_RunGC(rt);
}

/* --- Responses. --- */

static int respond(char tag, const char *body, size_t len)
{
    if (cloister_output(&tag, 1) != 0)
        return 1;
    return cloister_output(body, len) == 0 ? 0 : 1;
}

static int respond_text(char tag, const char *text)
{
    return respond(tag, text, strlen(text));
}

/* respond_value answers with tag and JSON.stringify(v) (undefined: "{}"). */
static int respond_json(char tag, JSValueConst v);

/* respond_exception answers with the pending exception. */
static int respond_exception(void)
{
    JSValue ex = JS_GetException(ctx);
    if (out_of_memory) {
        JS_FreeValue(ctx, ex);
        return respond('O', "", 0);
    }
    JSValue o = JS_NewObject(ctx);
    if (JS_IsError(ctx, ex)) {
        JS_SetPropertyStr(ctx, o, "name", JS_GetPropertyStr(ctx, ex, "name"));
        JS_SetPropertyStr(ctx, o, "message", JS_GetPropertyStr(ctx, ex, "message"));
        JS_SetPropertyStr(ctx, o, "stack", JS_GetPropertyStr(ctx, ex, "stack"));
    } else {
        /* throw "text" or throw {...}: the value as a string. */
        JS_SetPropertyStr(ctx, o, "name", JS_NewString(ctx, "Error"));
        JS_SetPropertyStr(ctx, o, "message", JS_ToString(ctx, ex));
    }
    JS_FreeValue(ctx, ex);
    int r = respond_json('E', o);
    JS_FreeValue(ctx, o);
    return r;
}

static int respond_json(char tag, JSValueConst v)
{
    JSValue s = JS_JSONStringify(ctx, v, JS_UNDEFINED, JS_UNDEFINED);
    if (JS_IsException(s))
        return tag == 'E' ? respond_text('E', "{\"name\":\"Error\",\"message\":\"exception could not be converted\"}")
                          : respond_exception();
    if (JS_IsUndefined(s))
        return respond(tag, "{}", 2);
    size_t n;
    const char *p = JS_ToCStringLen(ctx, &n, s);
    JS_FreeValue(ctx, s);
    if (p == NULL)
        return respond_exception();
    int r = respond(tag, p, n);
    JS_FreeCString(ctx, p);
    return r;
}

/* --- The request. --- */

/* find_main returns the action's entry point, or JS_UNDEFINED. */
static JSValue find_main(JSValueConst global)
{
    JSValue f = JS_GetPropertyStr(ctx, global, "main");
    if (JS_IsFunction(ctx, f))
        return f;
    JS_FreeValue(ctx, f);
    JSValue module = JS_GetPropertyStr(ctx, global, "module");
    JSValue exports = JS_GetPropertyStr(ctx, module, "exports");
    JS_FreeValue(ctx, module);
    if (JS_IsFunction(ctx, exports))
        return exports;
    f = JS_GetPropertyStr(ctx, exports, "main");
    JS_FreeValue(ctx, exports);
    if (JS_IsFunction(ctx, f))
        return f;
    JS_FreeValue(ctx, f);
    return JS_UNDEFINED;
}

static int run(const char *script, size_t script_len, const char *params, size_t params_len)
{
    JSValue global = JS_GetGlobalObject(ctx);
    /* CommonJS-style exports, as OpenWhisk's Node.js runtime accepts. */
    JSValue module = JS_NewObject(ctx);
    JSValue exports = JS_NewObject(ctx);
    JS_SetPropertyStr(ctx, module, "exports", JS_DupValue(ctx, exports));
    JS_SetPropertyStr(ctx, global, "module", module);
    JS_SetPropertyStr(ctx, global, "exports", exports);

    JSValue v = JS_Eval(ctx, script, script_len, "action.js", JS_EVAL_TYPE_GLOBAL);
    if (JS_IsException(v)) {
        JS_FreeValue(ctx, global);
        return respond_exception();
    }
    JS_FreeValue(ctx, v);
    JSValue main_fn = find_main(global);
    if (JS_IsUndefined(main_fn)) {
        JS_FreeValue(ctx, global);
        JS_ThrowReferenceError(ctx, "the script defines no function main (nor module.exports.main)");
        return respond_exception();
    }
    JSValue args = JS_ParseJSON(ctx, params, params_len, "params");
    if (JS_IsException(args)) {
        JS_FreeValue(ctx, main_fn);
        JS_FreeValue(ctx, global);
        return respond_exception();
    }
    JSValue ret = JS_Call(ctx, main_fn, JS_UNDEFINED, 1, (JSValueConst *)&args);
    JS_FreeValue(ctx, args);
    JS_FreeValue(ctx, main_fn);
    if (JS_IsException(ret)) {
        JS_FreeValue(ctx, global);
        return respond_exception();
    }
    /* Promise.resolve(ret): a promise, a thenable or a plain value. */
    JSValue promise_ctor = JS_GetPropertyStr(ctx, global, "Promise");
    JSValue resolve = JS_GetPropertyStr(ctx, promise_ctor, "resolve");
    JSValue p = JS_Call(ctx, resolve, promise_ctor, 1, (JSValueConst *)&ret);
    JS_FreeValue(ctx, resolve);
    JS_FreeValue(ctx, promise_ctor);
    JS_FreeValue(ctx, ret);
    JS_FreeValue(ctx, global);
    if (JS_IsException(p))
        return respond_exception();
    for (;;) {
        JSContext *c1;
        int r = JS_ExecutePendingJob(rt, &c1);
        if (r < 0) {
            JS_FreeValue(ctx, p);
            return respond_exception();
        }
        if (r == 0)
            break;
    }
    int r;
    switch (JS_PromiseState(ctx, p)) {
    case JS_PROMISE_FULFILLED: {
        JSValue res = JS_PromiseResult(ctx, p);
        r = respond_json('R', res);
        JS_FreeValue(ctx, res);
        break;
    }
    case JS_PROMISE_REJECTED:
        JS_Throw(ctx, JS_PromiseResult(ctx, p));
        r = respond_exception();
        break;
    default:
        JS_ThrowTypeError(ctx, "main returned a promise that never settles (nothing is left to run)");
        r = respond_exception();
        break;
    }
    JS_FreeValue(ctx, p);
    return r;
}

static uint32_t le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

int32_t cloister_handle(void)
{
    if (ctx == NULL)
        return respond_text('X', "engine not initialised");
    JS_UpdateStackTop(rt);
    size_t n;
    unsigned char *in = cloister_input(&n);
    if (in == NULL)
        return respond_text('X', "request could not be read");
    int check_only = n >= 8 && memcmp(in, "CJSC", 4) == 0;
    if (n < 8 || (!check_only && memcmp(in, "CJS1", 4) != 0))
        return respond_text('X', "request is not CJS1-framed");
    uint32_t script_len = le32(in + 4);
    if (script_len > n - 8)
        return respond_text('X', "script length exceeds the request");
    /* JS_Eval and JS_ParseJSON need a 0 byte after their input: the
     * params end at the buffer's terminating 0, and the script is copied. */
    char *script = malloc((size_t)script_len + 1);
    if (script == NULL)
        return respond('O', "", 0);
    memcpy(script, in + 8, script_len);
    script[script_len] = 0;
    if (check_only) {
        JSValue v = JS_Eval(ctx, script, script_len, "action.js", JS_EVAL_TYPE_GLOBAL | JS_EVAL_FLAG_COMPILE_ONLY);
        if (JS_IsException(v))
            return respond_exception();
        JS_FreeValue(ctx, v);
        return respond('R', "{}", 2);
    }
    const char *params = (const char *)in + 8 + script_len;
    size_t params_len = n - 8 - script_len;
    if (params_len == 0)
        params = "{}", params_len = 2;
    return run(script, script_len, params, params_len);
}
