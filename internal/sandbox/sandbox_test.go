package sandbox

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
	"github.com/tetratelabs/wazero/sys"
)

// newEngine returns an Engine closed when the test ends.
func newEngine(t testing.TB) *Engine {
	t.Helper()
	e, err := New(context.Background(), Config{})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if err := e.Close(context.Background()); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return e
}

// fixture returns testdata/name, adding ".wasm" if name has no extension.
func fixture(t testing.TB, name string) []byte {
	t.Helper()
	if filepath.Ext(name) == "" {
		name += ".wasm"
	}
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatalf("reading fixture: %v", err)
	}
	return b
}

// compileFixture compiles testdata/name.wasm under its own name as hash.
func compileFixture(t testing.TB, e *Engine, name string, limits Limits) *Module {
	t.Helper()
	m, err := e.Compile(context.Background(), name, fixture(t, name), limits)
	if err != nil {
		t.Fatalf("Compile(%s): %v", name, err)
	}
	return m
}

// checkEcho proves the engine still works, typically after a hostile run.
func checkEcho(t *testing.T, e *Engine) {
	t.Helper()
	m := compileFixture(t, e, "echo", Limits{})
	res, err := m.Run(context.Background(), Invocation{Stdin: []byte("still alive")})
	if err != nil {
		t.Fatalf("echo after hostile run: %v", err)
	}
	if got, want := string(res.Stdout), "still alive"; got != want {
		t.Fatalf("echo after hostile run: got stdout %q, want %q", got, want)
	}
}

// checkErr checks that err matches every error in want and none in notWant.
func checkErr(t *testing.T, err error, want, notWant []error) {
	t.Helper()
	if len(want) == 0 && err != nil {
		t.Fatalf("got error %v, want none", err)
	}
	for _, w := range want {
		if !errors.Is(err, w) {
			t.Errorf("got error %v, want one matching %v", err, w)
		}
	}
	for _, n := range notWant {
		if errors.Is(err, n) {
			t.Errorf("got error %v, want one not matching %v", err, n)
		}
	}
	// Errors are short and never carry guest output or stack traces.
	if err != nil {
		msg := err.Error()
		if strings.Contains(msg, "\n") || len(msg) > 200 || strings.Contains(msg, "cloister") {
			t.Errorf("got error message %q, want one short line without guest output", msg)
		}
	}
}

func TestCompileErrors(t *testing.T) {
	echo := fixture(t, "echo")
	tests := []struct {
		name   string
		hash   string
		wasm   []byte
		limits Limits
		want   error
	}{
		{name: "not wasm", wasm: fixture(t, "not_wasm.bin"), want: ErrInvalidModule},
		{name: "empty", wasm: nil, want: ErrInvalidModule},
		{name: "magic only", wasm: []byte("\x00asm"), want: ErrInvalidModule},
		{name: "truncated", wasm: echo[:len(echo)/2], want: ErrInvalidModule},
		{name: "bad version", wasm: append([]byte("\x00asm\x02\x00\x00\x00"), echo[8:]...), want: ErrInvalidModule},
		{name: "no _start", wasm: fixture(t, "not_command"), want: ErrInvalidModule},
		{name: "_start with params", wasm: fixture(t, "start_params"), want: ErrInvalidModule},
		{name: "non-WASI import", wasm: fixture(t, "bad_import"), want: ErrInvalidModule},
		{name: "WASI import with wrong signature", wasm: fixture(t, "bad_signature"), want: ErrInvalidModule},
		{name: "WASI import without memory", wasm: fixture(t, "no_memory"), want: ErrInvalidModule},
		{name: "global import", wasm: fixture(t, "import_global"), want: ErrInvalidModule},
		{name: "table over the entry limit", wasm: fixture(t, "table_huge"), want: ErrMemoryLimit},
		{name: "import count over the module (fuzz find)", wasm: []byte("\x00asm\x01\x00\x00\x00\x02x\xff\xff\xff\x80\x03\x02\x01\x02\x05\x03\x01\x00\x01\a\x13\x02\x06memory\x02\x00\x06r"), want: ErrInvalidModule},
		{name: "four billion locals", wasm: []byte(header + section(sectionCode, "\x01\x07\x01\xff\xff\xff\xff\x0f\x7f")), want: ErrInvalidModule},
		{name: "declared memory over default limit", wasm: fixture(t, "huge_memory"), want: ErrMemoryLimit},
		{name: "declared memory over set limit", wasm: fixture(t, "huge_memory"), limits: Limits{MemoryPages: 19999}, want: ErrMemoryLimit},
		{name: "memory limit over maximum", wasm: echo, limits: Limits{MemoryPages: MaxMemoryPages + 1}, want: ErrInvalidLimits},
		{name: "negative timeout", wasm: echo, limits: Limits{Timeout: -time.Second}, want: ErrInvalidLimits},
		{name: "negative output limit", wasm: echo, limits: Limits{MaxOutput: -1}, want: ErrInvalidLimits},
		{name: "negative log limit", wasm: echo, limits: Limits{MaxLog: -1}, want: ErrInvalidLimits},
		{name: "empty code hash", hash: "-", wasm: echo, want: ErrInvalidModule},
	}
	e := newEngine(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hash := "hash of " + tt.name
			if tt.hash == "-" {
				hash = ""
			}
			m, err := e.Compile(context.Background(), hash, tt.wasm, tt.limits)
			if m != nil {
				t.Errorf("got module %v, want nil", m)
			}
			checkErr(t, err, []error{tt.want}, nil)
			checkEcho(t, e)
		})
	}
}

func TestCompileHugeMemoryUnderLimit(t *testing.T) {
	e := newEngine(t)
	m, err := e.Compile(context.Background(), "huge", fixture(t, "huge_memory"), Limits{MemoryPages: 20000})
	if err != nil {
		t.Fatalf("got error %v, want none: 20000 pages fit a 20000-page limit", err)
	}
	if got, want := m.Limits().MemoryPages, uint32(20000); got != want {
		t.Errorf("got limit %d pages, want %d", got, want)
	}
}

func TestRun(t *testing.T) {
	short := 100 * time.Millisecond
	tests := []struct {
		name    string
		fixture string
		limits  Limits
		inv     Invocation
		want    []error // every one must match
		notWant []error // none may match
		// Checks on the Result; nil slices and negative numbers are not checked.
		stdout   *string
		stdoutN  int
		exitCode uint32
		pages    int64
	}{
		{name: "echo", fixture: "echo", inv: Invocation{Stdin: []byte("hello")}, stdout: ptr("hello"), pages: 1, stdoutN: -1},
		{name: "echo empty", fixture: "echo", stdout: ptr(""), pages: 1, stdoutN: -1},
		{name: "echo large", fixture: "echo", inv: Invocation{Stdin: bytes.Repeat([]byte("ab"), 50000)}, stdoutN: 100000, pages: 1},
		{name: "counter", fixture: "counter", stdout: ptr("1 1\n"), pages: 1, stdoutN: -1},
		{name: "unreachable", fixture: "trap", want: []error{ErrTrap}, notWant: []error{ErrMemoryLimit}, stdoutN: -1, pages: 0},
		{name: "divide by zero", fixture: "div_zero", want: []error{ErrTrap}, stdoutN: -1, pages: -1},
		{name: "stack overflow", fixture: "stack_overflow", want: []error{ErrTrap}, stdoutN: -1, pages: -1},
		{name: "out of bounds", fixture: "out_of_bounds", want: []error{ErrTrap}, notWant: []error{ErrMemoryLimit}, stdoutN: -1, pages: 1},
		{name: "infinite loop", fixture: "infinite_loop", limits: Limits{Timeout: short}, want: []error{ErrTimeout}, notWant: []error{ErrTrap, ErrExit}, stdoutN: -1, pages: -1},
		{name: "infinite start section", fixture: "start_loop", limits: Limits{Timeout: short}, want: []error{ErrTimeout}, stdoutN: -1, pages: -1},
		{name: "memory bomb", fixture: "memory_bomb", limits: Limits{MemoryPages: 16}, want: []error{ErrMemoryLimit, ErrTrap}, stdoutN: -1, pages: 16},
		{name: "memory bomb default limit", fixture: "memory_bomb", want: []error{ErrMemoryLimit, ErrTrap}, stdoutN: -1, pages: int64(DefaultMemoryPages)},
		{name: "big output", fixture: "big_output", limits: Limits{MaxOutput: 100000, Timeout: time.Minute}, want: []error{ErrOutputTooLarge}, notWant: []error{ErrTimeout}, stdoutN: 100000, pages: -1},
		{name: "big output default limit", fixture: "big_output", limits: Limits{Timeout: time.Minute}, want: []error{ErrOutputTooLarge}, stdoutN: DefaultMaxOutput, pages: -1},
		{name: "output then trap", fixture: "output_then_trap", limits: Limits{MaxOutput: 1000}, want: []error{ErrOutputTooLarge}, notWant: []error{ErrTrap}, stdoutN: 1000, pages: -1},
		{name: "output then exit", fixture: "output_then_exit", limits: Limits{MaxOutput: 1000}, want: []error{ErrOutputTooLarge}, stdoutN: 1000, pages: -1},
		{name: "output exactly at limit", fixture: "echo", limits: Limits{MaxOutput: 5}, inv: Invocation{Stdin: []byte("12345")}, stdout: ptr("12345"), stdoutN: -1, pages: -1},
		{name: "output one over limit", fixture: "echo", limits: Limits{MaxOutput: 5}, inv: Invocation{Stdin: []byte("123456")}, want: []error{ErrOutputTooLarge}, stdout: ptr("12345"), stdoutN: -1, pages: -1},
		{name: "exit code", fixture: "exit_code", want: []error{ErrExit}, notWant: []error{ErrTrap}, exitCode: 3, stdoutN: -1, pages: 1},
		{name: "exit posing as timeout", fixture: "fake_timeout", want: []error{ErrExit}, notWant: []error{ErrTimeout}, exitCode: 0xefffffff, stdoutN: -1, pages: -1},
		{name: "data segment out of bounds", fixture: "data_out_of_bounds", want: []error{ErrInvalidModule}, notWant: []error{ErrTrap}, stdoutN: -1, pages: 0},
		{name: "table bomb", fixture: "table_bomb", stdoutN: -1, pages: 1},
		{name: "stderr flood", fixture: "stderr_flood", limits: Limits{MaxLog: 1000}, stdout: ptr("ok\n"), stdoutN: -1, pages: -1},
	}
	e := newEngine(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := compileFixture(t, e, tt.fixture, tt.limits)
			res, err := m.Run(context.Background(), tt.inv)
			checkErr(t, err, tt.want, tt.notWant)
			if tt.stdout != nil && string(res.Stdout) != *tt.stdout {
				t.Errorf("got stdout %q, want %q", res.Stdout, *tt.stdout)
			}
			if tt.stdoutN >= 0 && len(res.Stdout) != tt.stdoutN {
				t.Errorf("got %d bytes of stdout, want %d", len(res.Stdout), tt.stdoutN)
			}
			if res.ExitCode != tt.exitCode {
				t.Errorf("got exit code %d, want %d", res.ExitCode, tt.exitCode)
			}
			if tt.pages >= 0 && int64(res.MemoryPages) != tt.pages {
				t.Errorf("got %d memory pages, want %d", res.MemoryPages, tt.pages)
			}
			checkEcho(t, e)
		})
	}
}

func ptr[T any](v T) *T { return &v }

func TestCompileDropsCustomSections(t *testing.T) {
	// A name section whose function-name count is 2^32-1: wazero v1.12
	// would allocate for all of them. Custom sections never reach wazero.
	bomb := section(sectionCustom, "\x04name\x01\x05\xff\xff\xff\xff\x0f")
	wasm := append(fixture(t, "echo"), bomb...)
	e := newEngine(t)
	m, err := e.Compile(context.Background(), "echo with names", wasm, Limits{})
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	res, err := m.Run(context.Background(), Invocation{Stdin: []byte("named")})
	if err != nil || string(res.Stdout) != "named" {
		t.Errorf("got %q, %v, want %q, nil", res.Stdout, err, "named")
	}
}

func TestRunStderrLimit(t *testing.T) {
	e := newEngine(t)
	m := compileFixture(t, e, "stderr_flood", Limits{MaxLog: 1000})
	res, err := m.Run(context.Background(), Invocation{})
	if err != nil {
		t.Fatalf("got error %v, want none: too much stderr is not an error", err)
	}
	if got, want := len(res.Stderr), 1000; got != want {
		t.Errorf("got %d bytes of stderr, want %d", got, want)
	}
	if !bytes.HasPrefix(res.Stderr, []byte("log line")) {
		t.Errorf("got stderr starting %q, want it to start %q", res.Stderr[:8], "log line")
	}
	if !res.StderrTruncated {
		t.Errorf("got StderrTruncated false, want true")
	}
}

func TestRunFresh(t *testing.T) {
	e := newEngine(t)
	m := compileFixture(t, e, "counter", Limits{})
	for i := range 5 {
		res, err := m.Run(context.Background(), Invocation{})
		if err != nil {
			t.Fatalf("run %d: %v", i, err)
		}
		if got, want := string(res.Stdout), "1 1\n"; got != want {
			t.Fatalf("run %d: got %q, want %q: state survived a run", i, got, want)
		}
	}
}

func TestRunResultFields(t *testing.T) {
	e := newEngine(t)
	m := compileFixture(t, e, "echo", Limits{})
	res, err := m.Run(context.Background(), Invocation{Stdin: []byte("x")})
	if err != nil {
		t.Fatal(err)
	}
	if res.Wall <= 0 {
		t.Errorf("got wall time %s, want > 0", res.Wall)
	}
	if got, want := res.CPUMeasured, runtime.GOOS == "linux"; got != want {
		t.Errorf("got CPUMeasured %v, want %v on %s", got, want, runtime.GOOS)
	}
	if res.CPU < 0 {
		t.Errorf("got CPU time %s, want >= 0", res.CPU)
	}
	if got, want := res.MemoryPages, uint32(1); got != want {
		t.Errorf("got %d memory pages, want %d", got, want)
	}
}

// envEntries runs the env fixture and returns the entries it printed.
func envEntries(t *testing.T, m *Module, inv Invocation) []string {
	t.Helper()
	res, err := m.Run(context.Background(), inv)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	out := strings.TrimSuffix(string(res.Stdout), "\x00")
	if out == "" {
		return nil
	}
	return strings.Split(out, "\x00")
}

func TestRunEnv(t *testing.T) {
	t.Setenv("CLOISTER_HOST_ONLY", "must not leak")
	e := newEngine(t)
	m := compileFixture(t, e, "env", Limits{})
	tests := []struct {
		name string
		inv  Invocation
		want []string
	}{
		{name: "nothing granted", want: nil},
		{
			name: "granted env only",
			inv:  Invocation{Caps: Capabilities{Env: map[string]string{"B": "2", "A": "1"}}},
			want: []string{"A=1", "B=2"},
		},
		{
			name: "meta only",
			inv:  Invocation{Meta: map[string]string{"CLOISTER_FUNCTION": "f", "CLOISTER_REQUEST_ID": "r1"}},
			want: []string{"CLOISTER_FUNCTION=f", "CLOISTER_REQUEST_ID=r1"},
		},
		{
			name: "meta wins over env",
			inv: Invocation{
				Caps: Capabilities{Env: map[string]string{"CLOISTER_FUNCTION": "spoofed", "LANG": "C", "EMPTY": ""}},
				Meta: map[string]string{"CLOISTER_FUNCTION": "f"},
			},
			want: []string{"CLOISTER_FUNCTION=f", "EMPTY=", "LANG=C"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := envEntries(t, m, tt.inv)
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("got environment %q, want %q", got, tt.want)
			}
		})
	}
}

func TestRunInvalidInvocation(t *testing.T) {
	e := newEngine(t)
	m := compileFixture(t, e, "env", Limits{})
	tests := []struct {
		name string
		inv  Invocation
	}{
		{name: "empty env name", inv: Invocation{Caps: Capabilities{Env: map[string]string{"": "x"}}}},
		{name: "env name with =", inv: Invocation{Caps: Capabilities{Env: map[string]string{"A=B": "x"}}}},
		{name: "env name with NUL", inv: Invocation{Caps: Capabilities{Env: map[string]string{"A\x00": "x"}}}},
		{name: "env value with NUL", inv: Invocation{Caps: Capabilities{Env: map[string]string{"A": "x\x00y"}}}},
		{name: "meta name with =", inv: Invocation{Meta: map[string]string{"CLOISTER_X=1": "x"}}},
		{name: "program name with NUL", inv: Invocation{Name: "f\x00"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := m.Run(context.Background(), tt.inv)
			checkErr(t, err, []error{ErrInvalidInvocation}, nil)
		})
	}
}

// fakeEpoch is the first reading of wazero's fake wall clock:
// 2022-01-01T00:00:00Z.
var fakeEpoch = time.Date(2022, 1, 1, 0, 0, 0, 0, time.UTC)

func TestRunClock(t *testing.T) {
	e := newEngine(t)
	m := compileFixture(t, e, "clock", Limits{})
	read := func(caps Capabilities) time.Time {
		t.Helper()
		res, err := m.Run(context.Background(), Invocation{Caps: caps})
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
		if len(res.Stdout) != 8 {
			t.Fatalf("got %d bytes of stdout, want 8", len(res.Stdout))
		}
		return time.Unix(0, int64(binary.LittleEndian.Uint64(res.Stdout))).UTC()
	}
	for i := range 2 {
		if got := read(Capabilities{}); !got.Equal(fakeEpoch) {
			t.Errorf("run %d without Clock: got %s, want the fake clock's %s", i, got, fakeEpoch)
		}
	}
	// The real clock is far from 2022; a day's slack keeps this from being
	// a timing assertion.
	if got, now := read(Capabilities{Clock: true}), time.Now(); got.Sub(now).Abs() > 24*time.Hour {
		t.Errorf("with Clock: got %s, want about %s", got, now)
	}
}

func TestRunRandom(t *testing.T) {
	e := newEngine(t)
	m := compileFixture(t, e, "random", Limits{})
	read := func(caps Capabilities) []byte {
		t.Helper()
		res, err := m.Run(context.Background(), Invocation{Caps: caps})
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
		if len(res.Stdout) != 32 {
			t.Fatalf("got %d bytes of stdout, want 32", len(res.Stdout))
		}
		return res.Stdout
	}
	a, b := read(Capabilities{}), read(Capabilities{})
	if !bytes.Equal(a, b) {
		t.Errorf("without Random: got %x then %x, want the same deterministic bytes", a, b)
	}
	// A command reads the stream a reactor reads (detRand), not a source
	// seeded for each instance.
	want := make([]byte, 32)
	if _, err := (&detRand{}).Read(want); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, want) {
		t.Errorf("without Random: got %x, want the deterministic stream %x", a, want)
	}
	c, d := read(Capabilities{Random: true}), read(Capabilities{Random: true})
	if bytes.Equal(c, d) || bytes.Equal(c, a) {
		t.Errorf("with Random: got %x then %x (deterministic %x), want fresh random bytes", c, d, a)
	}
}

func TestRunContextDeadline(t *testing.T) {
	e := newEngine(t)
	m := compileFixture(t, e, "infinite_loop", Limits{Timeout: time.Hour})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := m.Run(ctx, Invocation{})
	checkErr(t, err, []error{ErrTimeout, context.DeadlineExceeded}, nil)
	checkEcho(t, e)
}

func TestRunCancelled(t *testing.T) {
	e := newEngine(t)
	m := compileFixture(t, e, "infinite_loop", Limits{Timeout: time.Hour})

	t.Run("before", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := m.Run(ctx, Invocation{})
		checkErr(t, err, []error{context.Canceled}, []error{ErrTimeout, ErrExit})
	})
	t.Run("during", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() {
			_, err := m.Run(ctx, Invocation{})
			errc <- err
		}()
		cancel()
		checkErr(t, <-errc, []error{context.Canceled}, []error{ErrTimeout, ErrExit})
	})
	checkEcho(t, e)
}

func TestRunConcurrent(t *testing.T) {
	e := newEngine(t)
	m := compileFixture(t, e, "echo", Limits{})
	const goroutines, runs = 16, 20
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range runs {
				in := fmt.Sprintf("goroutine %d run %d", g, i)
				res, err := m.Run(context.Background(), Invocation{Stdin: []byte(in)})
				if err != nil {
					t.Errorf("%s: %v", in, err)
					return
				}
				if string(res.Stdout) != in {
					t.Errorf("got %q, want %q", res.Stdout, in)
					return
				}
			}
		}()
	}
	wg.Wait()
}

func TestRunConcurrentMixed(t *testing.T) {
	// Hostile and well-behaved runs side by side must not disturb each
	// other.
	e := newEngine(t)
	echo := compileFixture(t, e, "echo", Limits{})
	hostile := []*Module{
		compileFixture(t, e, "trap", Limits{}),
		compileFixture(t, e, "memory_bomb", Limits{MemoryPages: 8}),
		compileFixture(t, e, "big_output", Limits{MaxOutput: 4096, Timeout: time.Minute}),
		compileFixture(t, e, "infinite_loop", Limits{Timeout: 50 * time.Millisecond}),
	}
	var wg sync.WaitGroup
	for i := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if i%2 == 0 {
				if _, err := hostile[i/2%len(hostile)].Run(context.Background(), Invocation{}); err == nil {
					t.Errorf("hostile run %d: got no error, want one", i)
				}
				return
			}
			in := fmt.Sprint("echo ", i)
			res, err := echo.Run(context.Background(), Invocation{Stdin: []byte(in)})
			if err != nil || string(res.Stdout) != in {
				t.Errorf("echo run %d: got %q, %v, want %q, nil", i, res.Stdout, err, in)
			}
		}()
	}
	wg.Wait()
}

func TestCompileCache(t *testing.T) {
	e := newEngine(t)
	ctx := context.Background()
	echo := fixture(t, "echo")

	m1, err := e.Compile(ctx, "echo", echo, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	m2, err := e.Compile(ctx, "echo", echo, Limits{MemoryPages: DefaultMemoryPages})
	if err != nil {
		t.Fatal(err)
	}
	if m1 != m2 {
		t.Errorf("got a new *Module for equal limits, want the cached one")
	}
	if got, want := e.Stats(), (Stats{Compiles: 1, CacheHits: 1, Cached: 1}); got != want {
		t.Errorf("got stats %+v, want %+v", got, want)
	}

	// Other run limits share the compiled code but keep their own limits.
	m3, err := e.Compile(ctx, "echo", echo, Limits{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if m3 == m1 || m3.compiled != m1.compiled {
		t.Errorf("got module %p (code %p), want a new module sharing code %p", m3, m3.compiled, m1.compiled)
	}
	if got, want := m3.Limits().Timeout, time.Second; got != want {
		t.Errorf("got timeout %s, want %s", got, want)
	}
	if got, want := m1.Limits().Timeout, DefaultTimeout; got != want {
		t.Errorf("cached module: got timeout %s, want %s", got, want)
	}

	// Another memory limit is another compile.
	if _, err := e.Compile(ctx, "echo", echo, Limits{MemoryPages: 8}); err != nil {
		t.Fatal(err)
	}
	if got, want := e.Stats(), (Stats{Compiles: 2, CacheHits: 2, Cached: 2}); got != want {
		t.Errorf("got stats %+v, want %+v", got, want)
	}
	if got, want := m1.CodeHash(), "echo"; got != want {
		t.Errorf("got code hash %q, want %q", got, want)
	}
}

func TestCompileConcurrentSharesOneCompile(t *testing.T) {
	e := newEngine(t)
	echo := fixture(t, "echo")
	const callers = 32
	mods := make([]*Module, callers)
	var wg sync.WaitGroup
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m, err := e.Compile(context.Background(), "shared", echo, Limits{})
			if err != nil {
				t.Errorf("Compile: %v", err)
			}
			mods[i] = m
		}()
	}
	wg.Wait()
	if got, want := e.Stats(), (Stats{Compiles: 1, CacheHits: callers - 1, Cached: 1}); got != want {
		t.Errorf("got stats %+v, want %+v", got, want)
	}
	for i, m := range mods {
		if m != mods[0] {
			t.Errorf("caller %d got module %p, want %p", i, m, mods[0])
		}
	}
}

func TestCompileFailureNotCached(t *testing.T) {
	e := newEngine(t)
	ctx := context.Background()
	if _, err := e.Compile(ctx, "h", []byte("garbage"), Limits{}); !errors.Is(err, ErrInvalidModule) {
		t.Fatalf("got error %v, want %v", err, ErrInvalidModule)
	}
	if _, err := e.Compile(ctx, "h", fixture(t, "echo"), Limits{}); err != nil {
		t.Fatalf("got error %v after a failed compile under the same hash, want none", err)
	}
}

func TestClose(t *testing.T) {
	e, err := New(context.Background(), Config{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	m := compileFixture(t, e, "echo", Limits{})
	loop := compileFixture(t, e, "infinite_loop", Limits{Timeout: time.Hour})

	errc := make(chan error, 1)
	go func() {
		_, err := loop.Run(ctx, Invocation{})
		errc <- err
	}()
	if err := e.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	// Whether the run had started or not, it ends with ErrClosed.
	checkErr(t, <-errc, []error{ErrClosed}, nil)

	if err := e.Close(ctx); err != nil {
		t.Errorf("second Close: got %v, want nil", err)
	}
	_, err = m.Run(ctx, Invocation{})
	checkErr(t, err, []error{ErrClosed}, nil)
	_, err = e.Compile(ctx, "echo", fixture(t, "echo"), Limits{})
	checkErr(t, err, []error{ErrClosed}, nil)
}

// countingListener counts the guest function calls wazero reports to it.
type countingListener struct {
	mu    sync.Mutex
	calls int
}

func (l *countingListener) NewFunctionListener(api.FunctionDefinition) experimental.FunctionListener {
	return l
}

func (l *countingListener) Before(context.Context, api.Module, api.FunctionDefinition, []uint64, experimental.StackIterator) {
	l.mu.Lock()
	l.calls++
	l.mu.Unlock()
}

func (l *countingListener) After(context.Context, api.Module, api.FunctionDefinition, []uint64) {}

func (l *countingListener) Abort(context.Context, api.Module, api.FunctionDefinition, error) {}

func TestContextCannotInjectWazeroOptions(t *testing.T) {
	// wazero reads some options from the context. A function listener
	// would observe every guest call; the sandbox must ignore it.
	var l countingListener
	ctx := experimental.WithFunctionListenerFactory(context.Background(), &l)
	e := newEngine(t)
	m, err := e.Compile(ctx, "echo", fixture(t, "echo"), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Run(ctx, Invocation{Stdin: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	if l.calls != 0 {
		t.Errorf("got %d listener calls, want 0", l.calls)
	}

	// Control: the same context does reach a plain wazero runtime.
	r := wazero.NewRuntime(ctx)
	defer r.Close(ctx)
	wasi_snapshot_preview1.MustInstantiate(ctx, r)
	if _, err := r.InstantiateWithConfig(ctx, fixture(t, "echo"), wazero.NewModuleConfig()); err != nil {
		t.Fatal(err)
	}
	if l.calls == 0 {
		t.Errorf("control: got no listener calls from plain wazero, want some")
	}
}

func TestIsolate(t *testing.T) {
	type key struct{}
	ctx, cancel := context.WithCancel(context.WithValue(context.Background(), key{}, "kept"))
	ctx = experimental.WithFunctionListenerFactory(ctx, &countingListener{})
	iso := isolate(ctx)
	if got := iso.Value(key{}); got != "kept" {
		t.Errorf("got value %v, want %q", got, "kept")
	}
	cancel()
	<-iso.Done()
	if !errors.Is(iso.Err(), context.Canceled) {
		t.Errorf("got %v, want %v", iso.Err(), context.Canceled)
	}
	tests := []struct {
		name string
		key  any
		want bool
	}{
		{name: "local type", key: key{}, want: false},
		{name: "pointer to local type", key: &key{}, want: false},
		{name: "string", key: "string", want: false},
		{name: "nil", key: nil, want: false},
		{name: "wazero type", key: wazero.NewModuleConfig(), want: true},
		{name: "wazero sys type", key: sys.ExitError{}, want: true},
		{name: "pointer to wazero sys type", key: &sys.ExitError{}, want: true},
	}
	for _, tt := range tests {
		if got := isWazeroKey(tt.key); got != tt.want {
			t.Errorf("isWazeroKey(%s): got %v, want %v", tt.name, got, tt.want)
		}
	}
}

// TestCommandMemoryOutsideGoHeap: a command's linear memory is a mapping of
// its own, so a guest that grows to its 1 GiB limit leaves the Go heap as
// it was (wazero's default, a Go slice grown by copying, took about 4 GiB
// of heap for this guest).
func TestCommandMemoryOutsideGoHeap(t *testing.T) {
	ctx := context.Background()
	e, err := New(ctx, Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close(ctx)
	m, err := e.Compile(ctx, "bomb", fixture(t, "memory_bomb.wasm"), Limits{MemoryPages: 16384, Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	if _, err := m.Run(ctx, Invocation{}); !errors.Is(err, ErrMemoryLimit) {
		t.Fatalf("memory bomb: got %v, want ErrMemoryLimit", err)
	}
	runtime.ReadMemStats(&after)
	if grown := int64(after.TotalAlloc) - int64(before.TotalAlloc); grown > 64<<20 {
		t.Fatalf("a 1 GiB guest allocated %d MiB of Go heap", grown>>20)
	}
}
