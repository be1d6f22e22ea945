"""The Cloister Python engine's runtime (frozen into the engine as _cloister).

engine.c calls setup() once, in cloister_init, before the platform takes
its snapshot; then load(init_input) if the platform gave cloister_init an
input (the function's script, loaded once at deploy); and handle(request)
for every request. Requests are framed as

    magic (4 bytes) | uint32 little-endian script length | script | params JSON

with the magics

    CPY1  run the script, then call its main(params)
    CPYC  only compile the script (a syntax check at deploy); no params
    CPYP  call main(params) of the script load() loaded; no script
    CPYI  (load's init input) the script to load; no params

The answer is one tag byte and a body:

    R  the JSON of main(params)'s result ({} when it is None)
    E  {"name":..,"message":..,"traceback":..} of an uncaught exception
    O  nothing: the interpreter ran out of memory (the memory limit)
    X  a short text: the request itself was malformed

Every call starts from the snapshot taken after cloister_init, so nothing a
call does (globals, sys.modules, monkey-patched modules, files it wrote)
reaches the next call. internal/pyrt frames requests and decodes answers;
docs/python.md describes the contract.
"""

import builtins
import gc
import linecache
import os
import sys
import types
from json import dumps as _dumps, loads as _loads
from traceback import format_exception as _format_exception

SCRIPT = "action.py"

_NETWORK = "a Cloister function has no network"
_PROCESSES = "a Cloister function cannot start processes"
_NATIVE = "a Cloister function cannot load native code"
_FILES = "a Cloister function has no database or persistent files"

# Modules that need the host. None of them is in the engine; importing
# one (or a submodule) fails with this reason instead of "No module named".
BLOCKED = {
    "socket": _NETWORK, "_socket": _NETWORK, "ssl": _NETWORK, "_ssl": _NETWORK,
    "select": _NETWORK, "selectors": _NETWORK, "asyncio": _NETWORK,
    "http.client": _NETWORK, "http.server": _NETWORK, "http.cookiejar": _NETWORK,
    "urllib.request": _NETWORK, "urllib.robotparser": _NETWORK,
    "socketserver": _NETWORK, "smtplib": _NETWORK, "ftplib": _NETWORK,
    "poplib": _NETWORK, "imaplib": _NETWORK, "nntplib": _NETWORK,
    "telnetlib": _NETWORK, "xmlrpc": _NETWORK, "wsgiref": _NETWORK,
    "webbrowser": _NETWORK, "logging.handlers": _NETWORK, "logging.config": _NETWORK,
    "subprocess": _PROCESSES, "_posixsubprocess": _PROCESSES,
    "multiprocessing": _PROCESSES, "_multiprocessing": _PROCESSES,
    "concurrent": _PROCESSES, "pty": _PROCESSES,
    "ctypes": _NATIVE, "_ctypes": _NATIVE,
    "sqlite3": _FILES, "_sqlite3": _FILES, "dbm": _FILES, "shelve": _FILES,
}

# Imported once, before the snapshot: a call that imports them pays only a
# dictionary look-up.
PRELOAD = """
    base64 cloister collections csv dataclasses datetime decimal hashlib
    hmac itertools json math random re statistics string textwrap typing
    unicodedata zlib
""".split()


class _BlockedFinder:
    """A meta path finder, first in sys.meta_path, that refuses BLOCKED."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        top = name
        while top:
            reason = BLOCKED.get(top)
            if reason is not None:
                # No name=: "from http import client" would turn an error
                # naming the module into "cannot import name 'client'".
                raise ModuleNotFoundError(f"{name} is not available: {reason}")
            top = top.rpartition(".")[0]
        return None


def _no_system(command):
    """os.system: refused."""
    raise PermissionError(f"os.system({command!r}): {_PROCESSES}")


def setup():
    """Prepares the interpreter once, before the snapshot."""
    sys.meta_path.insert(0, _BlockedFinder)
    os.system = _no_system
    for name in PRELOAD:
        __import__(name)
    sys.argv = ["action"]
    # What the start-up created is never garbage: the collector need not
    # walk (and write to) it again in every call.
    gc.collect()
    gc.freeze()


def _module_name(t):
    m = t.__module__
    return t.__qualname__ if m in ("builtins", "__main__") else f"{m}.{t.__qualname__}"


def _exception(e):
    """The E answer's body for e, without the runtime's own frames."""
    tb = e.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == "<frozen _cloister>":
        tb = tb.tb_next
    try:
        message = str(e)
    except BaseException:  # a broken __str__ must not hide the exception
        message = f"<{type(e).__name__}: str() failed>"
    try:
        text = "".join(_format_exception(type(e), e, tb))
    except BaseException:
        text = ""
    body = {"name": _module_name(type(e)), "message": message, "traceback": text}
    return _dumps(body, ensure_ascii=True).encode()


def _flush():
    for f in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            f.flush()
        except BaseException:
            pass


def _compile(source):
    try:
        return compile(source, SCRIPT, "exec", dont_inherit=True)
    except MemoryError:
        # CPython's parser reports nesting deeper than its stack as a
        # MemoryError without a message; this one has one, so handle()
        # answers it as an exception, not as the memory limit.
        raise MemoryError("the script is too deeply nested to parse (or memory ran out)") from None


def _load(source):
    """Runs the script as the module "action" and returns its main."""
    code = _compile(source)
    linecache.cache[SCRIPT] = (len(source), None, source.splitlines(True), SCRIPT)
    mod = types.ModuleType("action")
    mod.__file__ = SCRIPT
    mod.__builtins__ = builtins
    sys.modules["action"] = mod
    exec(code, mod.__dict__)
    main = mod.__dict__.get("main")
    if not callable(main):
        raise NameError("the script defines no function main(params)")
    return main


def _parse(request, magics):
    """Splits a framed request into (magic, source, params), or returns the
    X answer's bytes."""
    if len(request) < 8 or request[:4] not in magics:
        return b"Xrequest is not framed as " + b" or ".join(magics)
    n = int.from_bytes(request[4:8], "little")
    if n > len(request) - 8:
        return b"Xscript length exceeds the request"
    try:
        return request[:4], request[8:8 + n].decode("utf-8"), request[8 + n:].decode("utf-8")
    except UnicodeDecodeError:
        return b"Xrequest is not UTF-8"


def _answer(fn, *args):
    """Runs fn(*args) and answers its result (R) or its exception (E, O)."""
    try:
        result = fn(*args)
        if isinstance(result, bytes):  # already an answer
            return result
        body = "{}" if result is None else _dumps(
            result, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        return b"R" + body.encode("utf-8")
    except MemoryError as e:
        if not e.args:  # the interpreter's own: memory ran out
            return b"O"
        return b"E" + _exception(e)
    except BaseException as e:
        try:
            return b"E" + _exception(e)
        except MemoryError:
            return b"O"
    finally:
        _flush()


def _reseed():
    # Seeded at every call from random_get (the manifest's randomness, or
    # the sandbox's fixed stream), not once before the snapshot.
    random = sys.modules.get("random")
    if random is not None:
        random.seed()


# What load() made of the function's script: its main, or the answer that
# every request gets because the script could not be loaded.
_main = None
_load_error = None


def load(request):
    """Loads the function's script once, before the snapshot: cloister_init
    calls it when the platform gives it an init input,

        b"CPYI" | uint32 little-endian script length | script

    The script's top level (its imports, its constants) then runs once, at
    deploy, and every call (b"CPYP", a zero length and the params) only
    calls main. If the script cannot be loaded (a syntax error, an
    exception at its top level), every request answers that error."""
    global _main, _load_error
    parsed = _parse(request, (b"CPYI",))
    if isinstance(parsed, bytes):
        _load_error = parsed
    else:
        answer = _answer(lambda: _set_main(_load(parsed[1])))
        if answer != b"R{}":
            _load_error = answer
    gc.collect()
    gc.freeze()


def _set_main(main):
    global _main
    _main = main


def _call(source, params):
    _reseed()
    main = _load(source)
    return main(_loads(params) if params.strip() else {})


def _call_loaded(params):
    _reseed()
    return _main(_loads(params) if params.strip() else {})


def handle(request):
    """Answers one request (bytes) with a tag byte and a body (bytes):

        CPY1  run the script in the request, then its main(params)
        CPYC  compile the script in the request (a syntax check)
        CPYP  call main(params) of the script load() loaded
    """
    if _load_error is not None:
        return _load_error
    parsed = _parse(request, (b"CPY1", b"CPYC", b"CPYP"))
    if isinstance(parsed, bytes):
        return parsed
    magic, source, params = parsed
    if magic == b"CPYC":
        return _answer(lambda: _compile(source) and None)
    if magic == b"CPYP":
        if _main is None:
            return b"Xno script was loaded at initialisation"
        return _answer(_call_loaded, params)
    return _answer(_call, source, params)
