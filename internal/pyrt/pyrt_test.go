package pyrt

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tetratelabs/wazero"

	"github.com/cloister-faas/cloister/internal/sandbox"
)

// testEngine is shared by the package's tests, so that the engine module
// is compiled once per memory limit, as on a worker.
var testEngine *sandbox.Engine

func TestMain(m *testing.M) {
	ctx := context.Background()
	e, err := sandbox.New(ctx, sandbox.Config{})
	if err != nil {
		panic(err)
	}
	testEngine = e
	code := m.Run()
	_ = e.Close(ctx)
	os.Exit(code)
}

// newFunction compiles the engine with lim and makes a pooled function.
func newFunction(t testing.TB, lim sandbox.Limits, caps sandbox.Capabilities) *sandbox.Function {
	t.Helper()
	ctx := context.Background()
	m, err := Compile(ctx, testEngine, lim)
	if err != nil {
		t.Fatal(err)
	}
	f, err := m.NewFunction(ctx, sandbox.FunctionSpec{Name: "py-test", MaxSandboxes: 2, IdleTimeout: -1, Caps: caps})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	return f
}

func call(t *testing.T, f *sandbox.Function, script, params string) (string, sandbox.Result, error) {
	t.Helper()
	out, res, err := Call(context.Background(), f, []byte(script), []byte(params))
	return string(out), res, err
}

// mustCall runs script and fails the test unless it answers want.
func mustCall(t *testing.T, f *sandbox.Function, script, params, want string) sandbox.Result {
	t.Helper()
	got, res, err := call(t, f, script, params)
	if err != nil {
		t.Fatalf("got error %v (log %q), want %s", err, res.Stderr, want)
	}
	if got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
	return res
}

// TestEngineImports: the engine reaches the host only through the reactor
// ABI, the state functions (cloister.state) and the WASI functions
// engine/vfs.c forwards.
func TestEngineImports(t *testing.T) {
	ctx := context.Background()
	r := wazero.NewRuntime(ctx)
	defer r.Close(ctx)
	cm, err := r.CompileModule(ctx, engine)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, d := range cm.ImportedFunctions() {
		mod, name, _ := d.Import()
		got = append(got, mod+"."+name)
	}
	slices.Sort(got)
	want := []string{
		"cloister.input_len", "cloister.input_read",
		"cloister.kv_cas", "cloister.kv_delete", "cloister.kv_get", "cloister.kv_list", "cloister.kv_put",
		"cloister.output_write",
		"wasi_snapshot_preview1.clock_res_get", "wasi_snapshot_preview1.clock_time_get",
		"wasi_snapshot_preview1.environ_get", "wasi_snapshot_preview1.environ_sizes_get",
		"wasi_snapshot_preview1.fd_write", "wasi_snapshot_preview1.poll_oneoff",
		"wasi_snapshot_preview1.random_get",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("imports:\n got %v\nwant %v", got, want)
	}
	if len(cm.ImportedMemories()) != 0 {
		t.Fatal("the engine imports a memory")
	}
}

func TestResults(t *testing.T) {
	f := newFunction(t, sandbox.Limits{}, sandbox.Capabilities{})
	tests := []struct {
		name, script, params, want string
	}{
		{"dict", "def main(p):\n    return {'greeting': 'Hello, ' + p['name'] + '!'}\n", `{"name":"Ada"}`, `{"greeting":"Hello, Ada!"}`},
		{"annotated", "def main(params: dict) -> dict:\n    return {'keys': len(params)}\n", ``, `{"keys":0}`},
		{"none", "def main(p):\n    pass\n", `{}`, `{}`},
		{"list", "def main(p):\n    return [x * 2 for x in p['xs']]\n", `{"xs":[1,2,3]}`, `[2,4,6]`},
		{"scalar", "def main(p):\n    return 42\n", `{}`, `42`},
		{"unicode", "def main(p):\n    return {'s': p['s'].upper(), 'n': len(p['s'])}\n", `{"s":"héllo €😀"}`, `{"s":"HÉLLO €😀","n":8}`},
		{"nested json", "def main(p):\n    return {'echo': p}\n", `{"a":{"b":[null,true,1.5,"c"]}}`, `{"echo":{"a":{"b":[null,true,1.5,"c"]}}}`},
		{"tuple", "def main(p):\n    return {'t': (1, 'a')}\n", `{}`, `{"t":[1,"a"]}`},
		{"big int", "def main(p):\n    return {'n': 2 ** 100}\n", `{}`, `{"n":1267650600228229401496703205376}`},
		{"top-level code", "import math\nK = math.factorial(10)\ndef main(p):\n    return {'k': K}\n", `{}`, `{"k":3628800}`},
		{"helper and class", "class Acc:\n    def __init__(self): self.n = 0\n    def add(self, x): self.n += x; return self\ndef total(xs):\n    a = Acc()\n    for x in xs: a.add(x)\n    return a.n\ndef main(p):\n    return {'total': total(p['xs'])}\n", `{"xs":[1,2,3,4]}`, `{"total":10}`},
		{"generators", "def main(p):\n    return {'s': sum(i * i for i in range(p['n']))}\n", `{"n":10}`, `{"s":285}`},
		{"no trailing newline", "def main(p): return {'ok': True}", `{}`, `{"ok":true}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mustCall(t, f, tc.script, tc.params, tc.want)
		})
	}
}

func TestExceptions(t *testing.T) {
	f := newFunction(t, sandbox.Limits{}, sandbox.Capabilities{})
	tests := []struct {
		name, script, wantName, wantMsg string
	}{
		{"raise", "def main(p):\n    raise ValueError('boom')\n", "ValueError", "boom"},
		{"key error", "def main(p):\n    return p['missing']\n", "KeyError", "'missing'"},
		{"attribute", "def main(p):\n    return None.x\n", "AttributeError", "'NoneType' object has no attribute 'x'"},
		{"zero division", "def main(p):\n    return 1 / 0\n", "ZeroDivisionError", "division by zero"},
		{"syntax error", "def main(p)\n    return 1\n", "SyntaxError", "expected ':'"},
		{"indentation", "def main(p):\nreturn 1\n", "IndentationError", "expected an indented block"},
		{"no main", "x = 1\n", "NameError", "defines no function main"},
		{"main not callable", "main = 3\n", "NameError", "defines no function main"},
		{"top-level raise", "raise RuntimeError('at import')\n", "RuntimeError", "at import"},
		{"custom class", "class Oops(Exception):\n    pass\ndef main(p):\n    raise Oops('mine')\n", "action.Oops", "mine"},
		{"module class", "import json\ndef main(p):\n    return json.loads('{')\n", "json.decoder.JSONDecodeError", "Expecting property name"},
		{"sys.exit", "import sys\ndef main(p):\n    sys.exit(3)\n", "SystemExit", "3"},
		{"unserialisable", "def main(p):\n    return {'s': {1, 2}}\n", "TypeError", "not JSON serializable"},
		{"nan", "def main(p):\n    return {'x': float('nan')}\n", "ValueError", "Out of range float values are not JSON compliant"},
		{"lone surrogate", "def main(p):\n    return {'x': '\\ud800'}\n", "UnicodeEncodeError", "surrogates not allowed"},
		{"bad str", "class E(Exception):\n    def __str__(self): raise ValueError()\ndef main(p):\n    raise E()\n", "action.E", "str() failed"},
		{"wrong arity", "def main():\n    return {}\n", "TypeError", "takes 0 positional arguments but 1 was given"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, res, err := call(t, f, tc.script, `{}`)
			var ex *Exception
			if !errors.As(err, &ex) || !errors.Is(err, ErrException) {
				t.Fatalf("got %v (log %q), want an exception", err, res.Stderr)
			}
			if ex.Name != tc.wantName || !strings.Contains(ex.Message, tc.wantMsg) {
				t.Fatalf("got %s: %q, want %s containing %q", ex.Name, ex.Message, tc.wantName, tc.wantMsg)
			}
		})
	}
	// The sandbox is still good after every exception.
	mustCall(t, f, "def main(p):\n    return {'ok': 1}\n", `{}`, `{"ok":1}`)
}

// TestTraceback: the traceback starts at the script, names its functions
// and shows its lines, as Python prints it.
func TestTraceback(t *testing.T) {
	f := newFunction(t, sandbox.Limits{}, sandbox.Capabilities{})
	script := "def inner(x):\n    return x['k'] + 1\n\ndef main(p):\n    return inner(p)\n"
	_, _, err := call(t, f, script, `{"k":"s"}`)
	var ex *Exception
	if !errors.As(err, &ex) {
		t.Fatalf("got %v, want an exception", err)
	}
	want := `Traceback (most recent call last):
  File "action.py", line 5, in main
    return inner(p)
           ^^^^^^^^
  File "action.py", line 2, in inner
    return x['k'] + 1
           ~~~~~~~^~~
TypeError: can only concatenate str (not "int") to str
`
	if ex.Traceback != want {
		t.Fatalf("traceback:\n%s\nwant:\n%s", ex.Traceback, want)
	}
	if got := ex.Error(); got != `TypeError: can only concatenate str (not "int") to str` {
		t.Fatalf("Error() = %q", got)
	}
	// A syntax error points at the line.
	_, _, err = call(t, f, "x = 1\ndef main(p):\n    return (\n", `{}`)
	if !errors.As(err, &ex) || ex.Name != "SyntaxError" || !strings.Contains(ex.Traceback, `File "action.py", line 3`) {
		t.Fatalf("got %v (traceback %q), want a SyntaxError at line 3", err, ex.Traceback)
	}
}

// TestStdlib: every module a function needs is in the engine and works.
func TestStdlib(t *testing.T) {
	f := newFunction(t, sandbox.Limits{}, sandbox.Capabilities{})
	checks := map[string]string{
		"json":        `json.loads(json.dumps({"a": [1, 2.5, None]}, sort_keys=True)) == {"a": [1, 2.5, None]}`,
		"re":          `re.findall(r"(\w+)@(\w+)\.com", "a@b.com, c@d.com") == [("a", "b"), ("c", "d")]`,
		"datetime":    `(datetime.date(2024, 3, 1) - datetime.timedelta(days=1)).isoformat() == "2024-02-29" and datetime.datetime.fromisoformat("2024-01-02T03:04:05+00:00").timestamp() == 1704164645`,
		"decimal":     `decimal.Decimal("0.1") + decimal.Decimal("0.2") == decimal.Decimal("0.3") and type(decimal.Context()).__module__ == "decimal" and decimal.__libmpdec_version__ != ""`,
		"hashlib":     `hashlib.sha256(b"abc").hexdigest() == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" and hashlib.md5(b"").hexdigest() == "d41d8cd98f00b204e9800998ecf8427e" and hashlib.blake2b(b"x").digest_size == 64 and hashlib.sha3_256(b"").hexdigest().startswith("a7ffc6f8")`,
		"hmac":        `hmac.new(b"key", b"The quick brown fox jumps over the lazy dog", "sha256").hexdigest() == "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8" and hmac.compare_digest(b"a", b"a")`,
		"base64":      `base64.b64encode(b"hello") == b"aGVsbG8=" and base64.b32decode(base64.b32encode(b"x")) == b"x" and base64.urlsafe_b64decode("_-8=") == b"\xff\xef"`,
		"collections": `collections.Counter("abracadabra").most_common(1) == [("a", 5)] and collections.OrderedDict(a=1) == {"a": 1} and collections.deque([1, 2], maxlen=1) == collections.deque([2]) and collections.namedtuple("P", "x y")(1, 2).y == 2`,
		"itertools":   `list(itertools.accumulate([1, 2, 3])) == [1, 3, 6] and list(itertools.pairwise("abc")) == [("a", "b"), ("b", "c")] and len(list(itertools.permutations(range(4)))) == 24`,
		"dataclasses": `dataclasses.asdict(dataclasses.make_dataclass("P", [("x", int), ("y", int, dataclasses.field(default=0))])(1)) == {"x": 1, "y": 0}`,
		"typing":      `typing.get_type_hints(typing.NamedTuple("T", [("a", typing.Optional[int])])) == {"a": typing.Optional[int]}`,
		"statistics":  `statistics.mean([1, 2, 3, 4]) == 2.5 and statistics.median([3, 1, 2]) == 2 and round(statistics.stdev([2, 4, 4, 4, 5, 5, 7, 9]), 3) == 2.138 and statistics.NormalDist(0, 1).cdf(0) == 0.5`,
		"math":        `math.isclose(math.sqrt(2) ** 2, 2) and math.comb(5, 2) == 10 and math.gcd(12, 18) == 6 and math.inf > 1e308`,
		"csv":         `list(csv.reader(io.StringIO('a,"b,c"\n1,2\n'))) == [["a", "b,c"], ["1", "2"]] and list(csv.DictReader(io.StringIO("x,y\n1,2\n"))) == [{"x": "1", "y": "2"}]`,
		"textwrap":    `textwrap.wrap("the quick brown fox", 10) == ["the quick", "brown fox"] and textwrap.dedent("  a\n  b") == "a\nb"`,
		"unicodedata": `unicodedata.name("€") == "EURO SIGN" and unicodedata.normalize("NFD", "é") == "e\u0301" and unicodedata.category("A") == "Lu"`,
		"zlib":        `zlib.decompress(zlib.compress(b"x" * 1000)) == b"x" * 1000 and zlib.crc32(b"hello") == 907060870 and gzip.decompress(gzip.compress(b"gz")) == b"gz"`,
		"more":        `[fractions.Fraction(1, 3) * 3 == 1, uuid.UUID(int=1).version is None, secrets.token_hex(4) != "", random.randint(1, 6) in range(1, 7), string.ascii_lowercase[0] == "a", enum.Enum("C", "R G").R.value == 1, copy.deepcopy([[1]]) == [[1]], functools.reduce(operator.add, [1, 2]) == 3, heapq.nsmallest(1, [3, 1]) == [1], bisect.bisect([1, 3], 2) == 1, struct.pack("<I", 1) == b"\x01\0\0\0", pathlib.PurePosixPath("/a/b.txt").suffix == ".txt", urllib.parse.quote("a b") == "a%20b", html.escape("<") == "&lt;", ipaddress.ip_address("10.0.0.1").is_private, xml.etree.ElementTree.fromstring("<a><b/></a>")[0].tag == "b", email.message_from_string("Subject: hi\n\nbody")["Subject"] == "hi", email.utils.parseaddr("A <a@b.c>") == ("A", "a@b.c"), tomllib.loads("a = 1") == {"a": 1}, pprint.pformat({"a": 1}) == "{'a': 1}", difflib.SequenceMatcher(None, "abc", "abd").ratio() > 0.6, calendar.isleap(2024), zipfile.is_zipfile(io.BytesIO(b"")) is False, time.time() > 0, locale.getpreferredencoding().lower() == "utf-8", sys.getfilesystemencoding() == "utf-8", "é".encode("latin-1") == b"\xe9", "€".encode("cp1252") == b"\x80", "x".encode("idna") == b"x", codecs.decode(b"\xe3\x81\x82", "utf-8") == "あ", "あ".encode("shift_jis") == b"\x82\xa0"]`,
	}
	imports := "import base64, bisect, calendar, codecs, collections, copy, csv, dataclasses, datetime, decimal, difflib, email, email.utils, enum, fractions, functools, gzip, hashlib, heapq, hmac, html, io, ipaddress, itertools, json, locale, math, operator, pathlib, pprint, random, re, secrets, statistics, string, struct, sys, textwrap, time, tomllib, typing, unicodedata, urllib.parse, uuid, xml.etree.ElementTree, zipfile, zlib\n"
	for name, expr := range checks {
		t.Run(name, func(t *testing.T) {
			// Every check is one boolean, or a list of them (the answer
			// says which failed).
			mustCall(t, f, imports+"def main(p):\n    r = "+expr+"\n    return {'failed': [i for i, x in enumerate(r) if not x] if isinstance(r, list) else [] if r else [0]}\n", `{}`, `{"failed":[]}`)
		})
	}
}

// TestFreshStateEveryCall: a global counter is 1 on every call, and
// nothing a call changes (builtins, modules, sys) reaches the next.
func TestFreshStateEveryCall(t *testing.T) {
	f := newFunction(t, sandbox.Limits{}, sandbox.Capabilities{})
	script := `import builtins, json, sys
counter = getattr(builtins, "counter", 0) + 1
builtins.counter = counter
calls = 0
def main(p):
    global calls
    calls += 1
    polluted = hasattr(json, "polluted")
    json.polluted = True
    sys.modules["leak"] = object()
    return {"counter": counter, "calls": calls, "polluted": polluted}
`
	for i := range 5 {
		res := mustCall(t, f, script, `{}`, `{"counter":1,"calls":1,"polluted":false}`)
		if i > 0 && (!res.Reused || res.Generation == 0) {
			t.Fatalf("call %d: sandbox not reused from the pool (reused %v, generation %d)", i, res.Reused, res.Generation)
		}
	}
	mustCall(t, f, "import sys\ndef main(p):\n    return {'leak': 'leak' in sys.modules}\n", `{}`, `{"leak":false}`)
}

// TestFilesDoNotPersist: the file system lives in the sandbox's memory. A
// call can write and read files, and the next call finds them gone.
func TestFilesDoNotPersist(t *testing.T) {
	f := newFunction(t, sandbox.Limits{}, sandbox.Capabilities{})
	script := `import os, tempfile, shutil
def main(p):
    seen = os.path.exists("/tmp/state.txt")
    with open("/tmp/state.txt", "a") as f:
        f.write("x")
    os.makedirs("/tmp/a/b", exist_ok=True)
    with open("/tmp/a/b/c.bin", "wb") as f:
        f.write(b"\0" * 100000)
    os.rename("/tmp/a/b/c.bin", "/tmp/a/c.bin")
    with tempfile.NamedTemporaryFile(mode="w+") as t:
        t.write("hello"); t.seek(0); tmp = t.read()
    with tempfile.TemporaryDirectory() as d:
        open(os.path.join(d, "f"), "w").close()
        listed = os.listdir(d)
    shutil.rmtree("/tmp/a")
    return {"seen": seen, "size": os.path.getsize("/tmp/state.txt"), "tmp": tmp,
            "listed": listed, "root": sorted(os.listdir("/")), "cwd": os.getcwd()}
`
	for range 3 {
		mustCall(t, f, script, `{}`, `{"seen":false,"size":1,"tmp":"hello","listed":["f"],"root":["tmp"],"cwd":"/"}`)
	}
	// Errors are the usual OSErrors.
	mustCall(t, f, `import os
def main(p):
    out = []
    for fn in (lambda: open("/nope/x", "w"), lambda: open("/tmp", "w"), lambda: os.rmdir("/"),
               lambda: os.symlink("/tmp", "/l"), lambda: os.listdir("/etc"), lambda: open("/usr/lib/python3.11/os.py")):
        try:
            fn()
            out.append("ok")
        except OSError as e:
            out.append(type(e).__name__)
    return out
`, `{}`, `["FileNotFoundError","IsADirectoryError","OSError","OSError","FileNotFoundError","FileNotFoundError"]`)
}

// TestNoHostAccess: what needs the host fails with a clear exception.
func TestNoHostAccess(t *testing.T) {
	f := newFunction(t, sandbox.Limits{}, sandbox.Capabilities{})
	tests := []struct {
		name, code, wantName, wantMsg string
	}{
		{"socket", "import socket", "ModuleNotFoundError", "socket is not available: a Cloister function has no network"},
		{"ssl", "import ssl", "ModuleNotFoundError", "ssl is not available"},
		{"urllib.request", "import urllib.request", "ModuleNotFoundError", "urllib.request is not available: a Cloister function has no network"},
		{"http.client", "from http import client", "ModuleNotFoundError", "http.client is not available"},
		{"asyncio", "import asyncio", "ModuleNotFoundError", "asyncio is not available"},
		{"subprocess", "import subprocess", "ModuleNotFoundError", "subprocess is not available: a Cloister function cannot start processes"},
		{"multiprocessing", "import multiprocessing.pool", "ModuleNotFoundError", "multiprocessing is not available"},
		{"os.system", "import os; os.system('ls')", "PermissionError", "os.system('ls'): a Cloister function cannot start processes"},
		{"os.popen", "import os; os.popen('ls')", "ModuleNotFoundError", "subprocess is not available"},
		{"os.fork", "import os; os.fork()", "AttributeError", "has no attribute 'fork'"},
		{"thread", "import threading; threading.Thread(target=print).start()", "RuntimeError", "can't start new thread"},
		{"ctypes", "import ctypes", "ModuleNotFoundError", "ctypes is not available: a Cloister function cannot load native code"},
		{"sqlite3", "import sqlite3", "ModuleNotFoundError", "sqlite3 is not available"},
		{"tkinter", "import tkinter", "ModuleNotFoundError", "No module named 'tkinter'"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, res, err := call(t, f, "def main(p):\n    "+tc.code+"\n", `{}`)
			var ex *Exception
			if !errors.As(err, &ex) {
				t.Fatalf("got %v (log %q), want an exception", err, res.Stderr)
			}
			if ex.Name != tc.wantName || !strings.Contains(ex.Message, tc.wantMsg) {
				t.Fatalf("got %s: %q, want %s containing %q", ex.Name, ex.Message, tc.wantName, tc.wantMsg)
			}
		})
	}
	// A lock works: threading exists, threads do not.
	mustCall(t, f, "import threading\nlock = threading.Lock()\ndef main(p):\n    with lock:\n        return {'n': threading.active_count()}\n", `{}`, `{"n":1}`)
	// The environment is the function's, not the host's.
	mustCall(t, f, "import os\ndef main(p):\n    return {'home': os.environ.get('HOME'), 'path': os.environ.get('PATH')}\n", `{}`, `{"home":null,"path":null}`)
}

func TestInfiniteLoopStopped(t *testing.T) {
	t.Run("fuel", func(t *testing.T) {
		f := newFunction(t, sandbox.Limits{Fuel: 200_000_000, Timeout: time.Minute}, sandbox.Capabilities{})
		_, res, err := call(t, f, "def main(p):\n    while True:\n        pass\n", `{}`)
		if !errors.Is(err, sandbox.ErrFuelExhausted) {
			t.Fatalf("got %v, want fuel exhausted", err)
		}
		if !res.InstructionsMeasured || res.Instructions < 200_000_000 {
			t.Fatalf("instructions %d (measured %v), want at least the fuel", res.Instructions, res.InstructionsMeasured)
		}
		mustCall(t, f, "def main(p):\n    return {'after': True}\n", `{}`, `{"after":true}`)
	})
	t.Run("timeout", func(t *testing.T) {
		f := newFunction(t, sandbox.Limits{Timeout: 200 * time.Millisecond}, sandbox.Capabilities{})
		_, _, err := call(t, f, "def main(p):\n    n = 0\n    while True:\n        n += 1\n", `{}`)
		if !errors.Is(err, sandbox.ErrTimeout) {
			t.Fatalf("got %v, want timeout", err)
		}
		mustCall(t, f, "def main(p):\n    return {'after': True}\n", `{}`, `{"after":true}`)
	})
}

func TestMemoryBombStopped(t *testing.T) {
	f := newFunction(t, sandbox.Limits{MemoryPages: MinMemoryPages + 64}, sandbox.Capabilities{})
	bombs := map[string]string{
		"list":   "def main(p):\n    a = []\n    while True:\n        a.append([0] * 100000)\n",
		"string": "def main(p):\n    s = 'x'\n    while True:\n        s = s + s\n",
		"bytes":  "def main(p):\n    a = []\n    while True:\n        a.append(bytearray(1 << 20))\n",
		"file":   "def main(p):\n    with open('/tmp/big', 'wb') as f:\n        while True:\n            f.write(b'x' * (1 << 20))\n",
		"huge":   "def main(p):\n    return {'n': len(bytes(1 << 40))}\n",
	}
	for name, script := range bombs {
		t.Run(name, func(t *testing.T) {
			_, res, err := call(t, f, script, `{}`)
			var ex *Exception
			switch {
			case errors.Is(err, ErrOutOfMemory), errors.Is(err, sandbox.ErrMemoryLimit):
			case errors.As(err, &ex) && (ex.Name == "OverflowError" || ex.Name == "OSError" && strings.Contains(ex.Message, "No space")):
			default:
				t.Fatalf("got %v (log %q), want out of memory", err, res.Stderr)
			}
			if res.MemoryPages > MinMemoryPages+64 {
				t.Fatalf("memory reached %d pages, over the limit of %d", res.MemoryPages, MinMemoryPages+64)
			}
		})
	}
	mustCall(t, f, "def main(p):\n    return {'ok': True}\n", `{}`, `{"ok":true}`)
}

func TestDeepRecursion(t *testing.T) {
	f := newFunction(t, sandbox.Limits{}, sandbox.Capabilities{})
	_, _, err := call(t, f, "def f(n):\n    return f(n + 1) + 1\ndef main(p):\n    return f(0)\n", `{}`)
	var ex *Exception
	if !errors.As(err, &ex) || ex.Name != "RecursionError" || !strings.Contains(ex.Traceback, "more times]") {
		t.Fatalf("got %v, want a RecursionError with a shortened traceback", err)
	}
	// Recursion through C (repr of a deeply nested list, json of one):
	// an exception or a trap, and the function still serves.
	for _, script := range []string{
		"def main(p):\n    a = []\n    for _ in range(5000):\n        a = [a]\n    return {'r': len(repr(a))}\n",
		"import json\ndef main(p):\n    a = []\n    for _ in range(5000):\n        a = [a]\n    return {'r': len(json.dumps(a))}\n",
		"class A:\n    def __getattr__(self, k):\n        return getattr(self, k + 'x')\ndef main(p):\n    return {'r': A().y}\n",
		// CPython's parser reports its own stack's end as memory's.
		"def main(p):\n    return eval('(' * 10000 + ')' * 10000)\n",
	} {
		_, _, err := call(t, f, script, `{}`)
		if !errors.As(err, &ex) && !errors.Is(err, sandbox.ErrTrap) && !errors.Is(err, ErrOutOfMemory) {
			t.Fatalf("%q: got %v, want an exception or a trap", script, err)
		}
	}
	// A script nested too deeply to parse is an exception that says so.
	_, _, err = call(t, f, "def main(p):\n    return "+strings.Repeat("[", 7000)+strings.Repeat("]", 7000)+"\n", `{}`)
	if !errors.As(err, &ex) || ex.Name != "MemoryError" || !strings.Contains(ex.Message, "too deeply nested") {
		t.Fatalf("got %v, want a MemoryError saying the script is too deeply nested", err)
	}
	mustCall(t, f, "def main(p):\n    return {'ok': True}\n", `{}`, `{"ok":true}`)
}

func TestPrintingGoesToLog(t *testing.T) {
	f := newFunction(t, sandbox.Limits{}, sandbox.Capabilities{})
	res := mustCall(t, f, "import sys\ndef main(p):\n    print('hello', 42, {'a': 1})\n    print('oops', file=sys.stderr)\n    sys.stdout.write('no newline')\n    return {}\n", `{}`, `{}`)
	if s := string(res.Stderr); s != "hello 42 {'a': 1}\noops\nno newline" {
		t.Fatalf("log %q", s)
	}
	// Printing without end: the log keeps its first 64 KiB, and the call
	// ends with the time limit.
	g := newFunction(t, sandbox.Limits{Timeout: 500 * time.Millisecond}, sandbox.Capabilities{})
	_, res, err := call(t, g, "def main(p):\n    line = 'x' * 1000\n    while True:\n        print(line)\n", `{}`)
	if !errors.Is(err, sandbox.ErrTimeout) {
		t.Fatalf("got %v, want timeout", err)
	}
	if len(res.Stderr) != sandbox.DefaultMaxLog || !res.StderrTruncated {
		t.Fatalf("log of %d bytes (truncated %v), want the first %d", len(res.Stderr), res.StderrTruncated, sandbox.DefaultMaxLog)
	}
	// Printing a lot and returning: the call succeeds.
	res = mustCall(t, g, "def main(p):\n    for i in range(20000):\n        print(i)\n    return {'done': True}\n", `{}`, `{"done":true}`)
	if !res.StderrTruncated {
		t.Fatal("log not truncated")
	}
}

func TestCapabilities(t *testing.T) {
	script := "import random, time, os\ndef main(p):\n    return {'r': random.random(), 'u': os.urandom(4).hex(), 'y': time.gmtime().tm_year}\n"
	denied := newFunction(t, sandbox.Limits{}, sandbox.Capabilities{})
	a, _, err1 := call(t, denied, script, `{}`)
	b, _, err2 := call(t, denied, script, `{}`)
	if err1 != nil || err2 != nil || a != b {
		t.Fatalf("without capabilities two calls differ: %s vs %s (%v, %v)", a, b, err1, err2)
	}
	var r struct{ Y int }
	if err := json.Unmarshal([]byte(a), &r); err != nil || r.Y != 2022 {
		t.Fatalf("without clock: %s, want the deterministic clock's 2022", a)
	}
	granted := newFunction(t, sandbox.Limits{}, sandbox.Capabilities{Clock: true, Random: true})
	c, _, err1 := call(t, granted, script, `{}`)
	d, _, err2 := call(t, granted, script, `{}`)
	if err1 != nil || err2 != nil || c == d {
		t.Fatalf("with random granted two calls agree: %s vs %s (%v, %v)", c, d, err1, err2)
	}
	if err := json.Unmarshal([]byte(c), &r); err != nil || r.Y < 2025 {
		t.Fatalf("with clock granted: %s, want the real year", c)
	}
	// The environment is the spec's, fixed in the snapshot.
	ctx := context.Background()
	m, err := Compile(ctx, testEngine, sandbox.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	fe, err := m.NewFunction(ctx, sandbox.FunctionSpec{Name: "env", Env: map[string]string{"GREETING": "hi"}, IdleTimeout: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer fe.Close()
	mustCall(t, fe, "import os\ndef main(p):\n    return {'g': os.environ['GREETING']}\n", `{}`, `{"g":"hi"}`)
}

func TestMetering(t *testing.T) {
	f := newFunction(t, sandbox.Limits{}, sandbox.Capabilities{})
	small := mustCall(t, f, "def main(p):\n    return {}\n", `{}`, `{}`)
	big := mustCall(t, f, "def main(p):\n    s = 0\n    for i in range(100000):\n        s += i\n    return {'s': s}\n", `{}`, `{"s":4999950000}`)
	if !small.InstructionsMeasured || !big.InstructionsMeasured || big.Instructions <= small.Instructions*2 {
		t.Fatalf("instructions: small %d, loop %d; want the loop to cost more", small.Instructions, big.Instructions)
	}
	if small.SnapshotHash == "" || small.HostCalls == 0 {
		t.Fatalf("snapshot %q, host calls %d", small.SnapshotHash, small.HostCalls)
	}
}

func TestRequestValidation(t *testing.T) {
	for name, tc := range map[string]struct {
		script, params string
		want           error
	}{
		"empty script":  {"", "{}", ErrScript},
		"nul":           {"def main(p): pass\x00", "{}", ErrScript},
		"not utf8":      {"def main(p): pass\xff", "{}", ErrScript},
		"array params":  {"def main(p): pass", "[1]", ErrParams},
		"bad json":      {"def main(p): pass", "{", ErrParams},
		"string":        {"def main(p): pass", `"x"`, ErrParams},
		"not utf8 json": {"def main(p): pass", "{\"\xd4\":0}", ErrParams},
	} {
		if _, err := Request([]byte(tc.script), []byte(tc.params)); !errors.Is(err, tc.want) {
			t.Errorf("%s: got %v, want %v", name, err, tc.want)
		}
	}
	if _, err := Request(bytes.Repeat([]byte("#"), MaxScriptBytes+1), nil); !errors.Is(err, ErrScript) {
		t.Errorf("too large: got %v", err)
	}
}

func TestResponseDecoding(t *testing.T) {
	for name, tc := range map[string]struct {
		out  string
		want error
	}{
		"empty":      {"", ErrEngine},
		"bad tag":    {"Z{}", ErrEngine},
		"bad result": {"R{", ErrEngine},
		"bad exc":    {"E[", ErrEngine},
		"no name":    {`E{"message":"m"}`, ErrEngine},
		"oom":        {"O", ErrOutOfMemory},
		"engine":     {"Xnope", ErrEngine},
		"exception":  {`E{"name":"ValueError","message":"m"}`, ErrException},
	} {
		if _, err := Response([]byte(tc.out)); !errors.Is(err, tc.want) {
			t.Errorf("%s: got %v, want %v", name, err, tc.want)
		}
	}
	if got, err := Response([]byte(`R{"a":1}`)); err != nil || string(got) != `{"a":1}` {
		t.Errorf("result: got %s, %v", got, err)
	}
}

// TestEngineRefusesBadFraming: the engine answers X to a request that is
// not framed by Request, and goes on serving.
func TestEngineRefusesBadFraming(t *testing.T) {
	f := newFunction(t, sandbox.Limits{}, sandbox.Capabilities{})
	ctx := context.Background()
	for _, in := range []string{"", "CPY1", "CJS1\x00\x00\x00\x00", "CPY1\xff\x00\x00\x00def", "CPY1\x01\x00\x00\x00\xff{}"} {
		res, err := f.Call(ctx, []byte(in))
		if err != nil {
			t.Fatalf("%q: %v", in, err)
		}
		if _, err := Response(res.Stdout); !errors.Is(err, ErrEngine) {
			t.Fatalf("%q: got %v, want ErrEngine", in, err)
		}
	}
	mustCall(t, f, "def main(p):\n    return {'ok': 1}\n", `{}`, `{"ok":1}`)
}

func TestCheck(t *testing.T) {
	f := newFunction(t, sandbox.Limits{}, sandbox.Capabilities{})
	ctx := context.Background()
	if err := Check(ctx, f, []byte("raise RuntimeError('not run')\ndef main(p):\n    return {}\n")); err != nil {
		t.Fatalf("valid script: %v", err)
	}
	err := Check(ctx, f, []byte("def main(p):\n    return {\n"))
	var ex *Exception
	if !errors.As(err, &ex) || ex.Name != "SyntaxError" {
		t.Fatalf("got %v, want a SyntaxError", err)
	}
	if err := Check(ctx, f, nil); !errors.Is(err, ErrScript) {
		t.Fatalf("empty script: got %v", err)
	}
	h, err := Inspect(ctx, testEngine, sandbox.Limits{}, sandbox.FunctionSpec{Name: "py-test"}, []byte("def main(p):\n    pass\n"))
	if err != nil || h != f.Snapshot().Hash() {
		t.Fatalf("Inspect: got %q, %v; want the snapshot %q", h, err, f.Snapshot().Hash())
	}
}

// TestMinMemory: the engine starts in MinMemoryPages, with room to run a
// call, and not in much less.
func TestMinMemory(t *testing.T) {
	f := newFunction(t, sandbox.Limits{MemoryPages: MinMemoryPages}, sandbox.Capabilities{})
	if p := f.Snapshot().Pages(); p > MinMemoryPages || p < MinMemoryPages*3/4 {
		t.Fatalf("snapshot of %d pages; MinMemoryPages %d is out of date", p, MinMemoryPages)
	}
	mustCall(t, f, "import json\ndef main(p):\n    return json.loads(json.dumps({'a': list(range(1000))}))['a'][-1:]\n", `{}`, `[999]`)
}
