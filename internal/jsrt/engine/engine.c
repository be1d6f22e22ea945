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
 * reaches the host but the reactor ABI's three functions, its state
 * functions kv_* (cloister.state, denied unless the manifest grants state),
 * and WASI's fd_write (console.* to the log), clock_time_get (Date) and
 * random_get (Math.random), which the sandbox grants or fakes per the
 * manifest.
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

/* --- cloister.state: the function's sealed key-value state
 * (docs/state.md, docs/js.md). Keys and values are strings (UTF-8 in the
 * store); every call goes to the host's kv_* functions, which answer
 * CLOISTER_KV_DENIED unless the manifest grants the state. --- */

/* state_error throws the JavaScript error for a host code. */
static JSValue state_error(JSContext *c, int32_t code)
{
    switch (code) {
    case CLOISTER_KV_INVALID:
        return JS_ThrowRangeError(c, "cloister.state: invalid key (1 to 512 bytes of UTF-8) or argument");
    case CLOISTER_KV_TOO_LARGE:
        return JS_ThrowRangeError(c, "cloister.state: value too large");
    case CLOISTER_KV_QUOTA:
        return JS_ThrowRangeError(c, "cloister.state: the function's state quota (keys or bytes) is exhausted");
    case CLOISTER_KV_DENIED:
        return JS_ThrowTypeError(c, "cloister.state: not granted to this function (manifest capabilities.state)");
    }
    /* CLOISTER_KV_FAILED: the host already failed the request. */
    return JS_ThrowInternalError(c, "cloister.state: failed (integrity or availability); the request fails");
}

/* string_arg returns argv[i] as UTF-8, or NULL with a TypeError pending
 * when it is not a string. */
static const char *string_arg(JSContext *c, JSValueConst *argv, int i, const char *what, size_t *len)
{
    if (!JS_IsString(argv[i])) {
        JS_ThrowTypeError(c, "cloister.state: %s must be a string", what);
        return NULL;
    }
    return JS_ToCStringLen(c, len, argv[i]);
}

/* get(key): the value, or null when the key is absent. */
static JSValue js_state_get(JSContext *c, JSValueConst this_val, int argc, JSValueConst *argv)
{
    (void)this_val, (void)argc;
    size_t kn, vn;
    const char *k = string_arg(c, argv, 0, "the key", &kn);
    if (k == NULL)
        return JS_EXCEPTION;
    /* Read into a buffer that grows to the value's length. */
    int32_t cap = 256, got;
    char *v = NULL;
    for (;;) {
        char *nv = realloc(v, (size_t)cap);
        if (nv == NULL) {
            free(v);
            JS_FreeCString(c, k);
            out_of_memory = 1; /* the call fails with memory_limit */
            return JS_ThrowOutOfMemory(c);
        }
        v = nv;
        got = cloister_kv_get(k, (int32_t)kn, v, cap);
        if (got <= cap)
            break;
        cap = got;
    }
    JS_FreeCString(c, k);
    if (got < 0) {
        free(v);
        return got == CLOISTER_KV_NOT_FOUND ? JS_NULL : state_error(c, got);
    }
    vn = (size_t)got;
    JSValue r = JS_NewStringLen(c, v, vn);
    free(v);
    return r;
}

/* put(key, value): sets key to value. */
static JSValue js_state_put(JSContext *c, JSValueConst this_val, int argc, JSValueConst *argv)
{
    (void)this_val, (void)argc;
    size_t kn, vn;
    const char *k = string_arg(c, argv, 0, "the key", &kn);
    if (k == NULL)
        return JS_EXCEPTION;
    const char *v = string_arg(c, argv, 1, "the value", &vn);
    if (v == NULL) {
        JS_FreeCString(c, k);
        return JS_EXCEPTION;
    }
    int32_t r = vn > INT32_MAX ? CLOISTER_KV_TOO_LARGE : cloister_kv_put(k, (int32_t)kn, v, (int32_t)vn);
    JS_FreeCString(c, k);
    JS_FreeCString(c, v);
    return r == 0 ? JS_UNDEFINED : state_error(c, r);
}

/* delete(key): whether the key existed. */
static JSValue js_state_delete(JSContext *c, JSValueConst this_val, int argc, JSValueConst *argv)
{
    (void)this_val, (void)argc;
    size_t kn;
    const char *k = string_arg(c, argv, 0, "the key", &kn);
    if (k == NULL)
        return JS_EXCEPTION;
    int32_t r = cloister_kv_delete(k, (int32_t)kn);
    JS_FreeCString(c, k);
    return r >= 0 ? JS_NewBool(c, r == 1) : state_error(c, r);
}

/* cas(key, expected, value): if key's value is expected (null: the key is
 * absent), sets it to value (null: deletes it); whether it did. */
static JSValue js_state_cas(JSContext *c, JSValueConst this_val, int argc, JSValueConst *argv)
{
    (void)this_val, (void)argc;
    size_t kn, on = 0, nn = 0;
    const char *k = NULL, *o = NULL, *n = NULL;
    JSValue ret = JS_EXCEPTION;
    int absent_old = JS_IsNull(argv[1]) || JS_IsUndefined(argv[1]);
    int absent_new = JS_IsNull(argv[2]) || JS_IsUndefined(argv[2]);
    if ((k = string_arg(c, argv, 0, "the key", &kn)) == NULL)
        goto done;
    if (!absent_old && (o = string_arg(c, argv, 1, "the expected value (or null)", &on)) == NULL)
        goto done;
    if (!absent_new && (n = string_arg(c, argv, 2, "the new value (or null)", &nn)) == NULL)
        goto done;
    if (on > INT32_MAX || nn > INT32_MAX) {
        ret = state_error(c, CLOISTER_KV_TOO_LARGE);
        goto done;
    }
    int32_t r = cloister_kv_cas(k, (int32_t)kn, o, absent_old ? -1 : (int32_t)on, n, absent_new ? -1 : (int32_t)nn);
    ret = r >= 0 ? JS_NewBool(c, r == 1) : state_error(c, r);
done:
    if (k != NULL)
        JS_FreeCString(c, k);
    if (o != NULL)
        JS_FreeCString(c, o);
    if (n != NULL)
        JS_FreeCString(c, n);
    return ret;
}

/* list(prefix = ""): the keys that start with prefix, in byte order. */
static JSValue js_state_list(JSContext *c, JSValueConst this_val, int argc, JSValueConst *argv)
{
    (void)this_val, (void)argc;
    size_t pn = 0;
    const char *prefix = "";
    int owned = !JS_IsUndefined(argv[0]);
    if (owned && (prefix = string_arg(c, argv, 0, "the prefix", &pn)) == NULL)
        return JS_EXCEPTION;
    enum { CAP = 64 * 1024 };
    unsigned char *buf = malloc(CAP);
    JSValue arr = JS_NewArray(c);
    if (buf == NULL || JS_IsException(arr)) {
        out_of_memory = 1;
        free(buf);
        if (owned)
            JS_FreeCString(c, prefix);
        JS_FreeValue(c, arr);
        return JS_ThrowOutOfMemory(c);
    }
    unsigned char start[512];
    int32_t start_len = 0;
    uint32_t count = 0;
    JSValue ret = arr;
    for (;;) {
        int32_t got = cloister_kv_list(prefix, (int32_t)pn, start, start_len, buf, CAP);
        if (got < 0) {
            JS_FreeValue(c, arr);
            ret = state_error(c, got);
            break;
        }
        if (got == 0)
            break;
        for (int32_t at = 0; at + 4 <= got;) {
            uint32_t kl = (uint32_t)buf[at] | (uint32_t)buf[at + 1] << 8 | (uint32_t)buf[at + 2] << 16 | (uint32_t)buf[at + 3] << 24;
            at += 4;
            if (kl > sizeof start || kl > (uint32_t)(got - at)) {
                JS_FreeValue(c, arr);
                ret = JS_ThrowInternalError(c, "cloister.state: malformed list from the host");
                goto out;
            }
            JS_SetPropertyUint32(c, arr, count++, JS_NewStringLen(c, (const char *)buf + at, kl));
            memcpy(start, buf + at, kl);
            start_len = (int32_t)kl;
            at += (int32_t)kl;
        }
    }
out:
    free(buf);
    if (owned)
        JS_FreeCString(c, prefix);
    return ret;
}

static void install_builtins(void)
{
    JSValue global = JS_GetGlobalObject(ctx);
    JSValue console = JS_NewObject(ctx);
    static const char *const names[] = {"log", "info", "warn", "error", "debug"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        JS_SetPropertyStr(ctx, console, names[i], JS_NewCFunction(ctx, js_console_log, names[i], 1));
    JS_SetPropertyStr(ctx, global, "console", console);
    JSValue cloister = JS_NewObject(ctx);
    JSValue state = JS_NewObject(ctx);
    JS_SetPropertyStr(ctx, state, "get", JS_NewCFunction(ctx, js_state_get, "get", 1));
    JS_SetPropertyStr(ctx, state, "put", JS_NewCFunction(ctx, js_state_put, "put", 2));
    JS_SetPropertyStr(ctx, state, "delete", JS_NewCFunction(ctx, js_state_delete, "delete", 1));
    JS_SetPropertyStr(ctx, state, "cas", JS_NewCFunction(ctx, js_state_cas, "cas", 3));
    JS_SetPropertyStr(ctx, state, "list", JS_NewCFunction(ctx, js_state_list, "list", 1));
    JS_SetPropertyStr(ctx, cloister, "state", state);
    JS_SetPropertyStr(ctx, global, "cloister", cloister);
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
