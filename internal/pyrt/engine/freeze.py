"""Freezes the Python engine's standard library into a C table.

scripts/pyengine.sh runs this with Debian's python3.11 (the build Python,
the same CPython version as the engine, so its bytecode and marshal format
are the engine's) and PYTHONHASHSEED=0 (marshal writes the members of a
frozenset constant in hash order), as

    python3.11 -I -S -B freeze.py LIBDIR OUT.c OWN.py...

LIBDIR is the engine's Lib/ (Debian's patched tree), each OWN.py one of
the engine's own modules, frozen under its file name (_cloister.py, the
runtime, as "_cloister"; cloister.py, the functions' API, as "cloister").
OUT.c defines
cloister_frozen, a table for PyImport_FrozenModules: every module listed
below, compiled with co_filename "<frozen NAME>" as CPython's own frozen
modules are. Nothing of the standard library is ever read from a disk.

The modules CPython already deep-freezes into the interpreter (abc, codecs,
io, os, stat, posixpath, ...) are left out: the interpreter has them.
"""

import importlib.util
import marshal
import os
import re
import sys

# Packages (with every submodule not excluded below) and modules, by name.
# What needs the host (sockets, processes, native code, databases, a
# terminal) is left out; docs/python.md lists it. _cloister.py turns an
# import of those into a clear error.
INCLUDE = """
    __future__ _compat_pickle _compression _markupbase _strptime
    _threading_local _weakrefset argparse ast base64 bisect calendar
    collections colorsys configparser contextlib contextvars copy copyreg csv
    dataclasses datetime decimal difflib dis email encodings enum filecmp
    fileinput fnmatch fractions functools getopt gettext glob graphlib gzip
    hashlib heapq hmac html http importlib inspect ipaddress json keyword
    linecache locale logging mimetypes numbers opcode operator optparse
    pathlib pickle platform plistlib pprint queue quopri random re reprlib
    secrets shlex shutil signal sre_compile sre_constants sre_parse statistics string
    stringprep struct sysconfig tarfile tempfile textwrap threading timeit
    token tokenize tomllib traceback types typing urllib uuid warnings weakref
    xml zipfile zoneinfo
""".split()

# Submodules left out of the packages above (and their own submodules).
EXCLUDE = """
    encodings.mbcs encodings.oem
    http.client http.cookiejar http.server
    importlib.metadata importlib.resources importlib.readers
    importlib.simple importlib._bootstrap importlib._bootstrap_external
    importlib.machinery importlib.util
    json.tool logging.config logging.handlers
    urllib.request urllib.robotparser
""".split()

# Deep-frozen into the interpreter already (Python/frozen.c).
DEEPFROZEN = """
    abc codecs io _collections_abc _sitebuiltins genericpath ntpath posixpath
    os site stat importlib.util importlib.machinery runpy
""".split()

# sysconfig reads its build-time variables from this module. The build
# writes one full of build paths, and Debian's sysconfig looks for it under
# another name (_sysconfigdata_{abiflags}_{multiarch}); the engine carries
# this small one instead.
SYSCONFIGDATA_NAME = "_sysconfigdata__wasm32-wasi"
SYSCONFIGDATA = '''"""Build-time variables of the Cloister Python engine (wasm32-wasi)."""
build_time_vars = {
    "ABIFLAGS": "",
    "EXE": ".wasm",
    "EXT_SUFFIX": ".cpython-311-wasm32-wasi.so",
    "HOST_GNU_TYPE": "wasm32-unknown-wasi",
    "MACHDEP": "wasi",
    "MULTIARCH": "wasm32-wasi",
    "Py_DEBUG": 0,
    "Py_ENABLE_SHARED": 0,
    "SHLIB_SUFFIX": ".so",
    "SOABI": "cpython-311-wasm32-wasi",
    "TZPATH": "",
    "VERSION": "3.11",
    "WITH_DOC_STRINGS": 1,
    "WITH_PYMALLOC": 0,
    "prefix": "/usr/local",
    "exec_prefix": "/usr/local",
    "py_version_nodot": "311",
}
'''


def excluded(name):
    for x in EXCLUDE + DEEPFROZEN:
        if name == x or name.startswith(x + "."):
            return True
    parts = name.split(".")
    return "__main__" in parts or "test" in parts or "tests" in parts


def modules(lib):
    """Yields (name, path, is_package) for every module to freeze."""
    for top in INCLUDE:
        pkg = os.path.join(lib, top)
        if os.path.isdir(pkg):
            for root, dirs, files in os.walk(pkg):
                dirs.sort()
                rel = os.path.relpath(root, lib).replace(os.sep, ".")
                if excluded(rel) or "__init__.py" not in files:
                    dirs.clear()
                    continue
                yield rel, os.path.join(root, "__init__.py"), True
                for f in sorted(files):
                    if f.endswith(".py") and f != "__init__.py":
                        name = rel + "." + f[:-3]
                        if not excluded(name):
                            yield name, os.path.join(root, f), False
        elif os.path.isfile(pkg + ".py"):
            if not excluded(top):
                yield top, pkg + ".py", False
        else:
            sys.exit(f"freeze: {top} is not in {lib}")


def target_magic(lib):
    """The engine's bytecode magic number, from its own importlib."""
    src = open(os.path.join(lib, "importlib", "_bootstrap_external.py"), encoding="utf-8").read()
    m = re.search(r"^MAGIC_NUMBER = \((\d+)\)\.to_bytes\(2, 'little'\) \+ b'\\r\\n'", src, re.M)
    if not m:
        sys.exit("freeze: no MAGIC_NUMBER in the engine's importlib")
    return int(m.group(1)).to_bytes(2, "little") + b"\r\n"


def main():
    if len(sys.argv) < 4:
        sys.exit("usage: freeze.py LIBDIR OUT.c OWN.py...")
    lib, out, own = sys.argv[1], sys.argv[2], sys.argv[3:]
    if os.environ.get("PYTHONHASHSEED") != "0":
        sys.exit("freeze: run with PYTHONHASHSEED=0 (frozenset constants are marshalled in hash order)")
    if importlib.util.MAGIC_NUMBER != target_magic(lib):
        sys.exit(f"freeze: the build Python ({sys.version.split()[0]}) compiles other bytecode than the engine")

    entries = [(n, open(p, "rb").read(), pkg) for n, p, pkg in modules(lib)]
    for path in own:
        name = os.path.basename(path)[:-len(".py")]
        entries.append((name, open(path, "rb").read(), False))
    entries.append((SYSCONFIGDATA_NAME, SYSCONFIGDATA.encode(), False))
    entries.sort()
    names = [e[0] for e in entries]
    if len(set(names)) != len(names):
        sys.exit("freeze: a module is listed twice")

    blob = bytearray()
    table = []
    for name, source, pkg in entries:
        code = compile(source, f"<frozen {name}>", "exec", dont_inherit=True, optimize=0)
        data = marshal.dumps(code)
        table.append((name, len(blob), len(data), pkg))
        blob += data

    with open(out, "w", encoding="ascii", newline="\n") as f:
        f.write("/* Generated by internal/pyrt/engine/freeze.py; do not edit. */\n")
        f.write("#include <Python.h>\n\n")
        f.write(f"/* {len(table)} modules, {len(blob)} bytes of marshalled code. */\n")
        f.write("static const unsigned char blob[] =\n")
        for i in range(0, len(blob), 32):
            f.write('    "' + "".join(f"\\x{b:02x}" for b in blob[i:i + 32]) + '"\n')
        f.write(";\n\nconst struct _frozen cloister_frozen[] = {\n")
        for name, off, size, pkg in table:
            f.write(f'    {{"{name}", blob + {off}, {size}, {int(pkg)}, NULL}},\n')
        f.write("    {NULL, NULL, 0, 0, NULL},\n};\n")
    print(f"freeze: {len(table)} modules, {len(blob)} bytes", file=sys.stderr)


if __name__ == "__main__":
    main()
