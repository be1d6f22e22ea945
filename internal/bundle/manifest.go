package bundle

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/cloister-faas/cloister/internal/attest"
	"github.com/cloister-faas/cloister/internal/certs"
	"github.com/cloister-faas/cloister/internal/strictjson"
	"github.com/cloister-faas/cloister/internal/tee"
)

// ABIs a function can use.
const (
	ABICommand = "wasi-command" // request on stdin, result on stdout, metadata in env; fresh instance per call
	ABIReactor = "reactor"      // cloister_handle per call from a snapshot taken after init (docs/reactor-abi.md)
	ABIJS      = "js"           // the module is a JavaScript script run by the shared engine (docs/js.md)
	ABIPython  = "python"       // the module is a Python script, imported once by the shared engine (docs/python.md)
)

// Runtimes a function can use.
const (
	RuntimeWasm   = "wasm"   // the module is WebAssembly
	RuntimeJS     = "js"     // the module is a JavaScript script (abi js)
	RuntimePython = "python" // the module is a Python script (abi python)
)

// DefaultPythonMemoryPages is the memory limit (64 KiB pages, 32 MiB) of
// a Python function deployed without a manifest: the interpreter's own
// state takes about 15 MiB of it (docs/python.md).
const DefaultPythonMemoryPages = 512

// Script reports whether the runtime's module is source code run by a
// shared language engine (JavaScript, Python) rather than WebAssembly.
func Script(runtime string) bool { return runtime == RuntimeJS || runtime == RuntimePython }

// Confidentiality modes.
const (
	ConfidentialRequired = "required" // plaintext invocations are refused
	ConfidentialOptional = "optional" // plaintext invocations are allowed
)

// Hard ceilings that no manifest can raise.
const (
	MaxMemoryPages = 65536
	MaxTimeoutMS   = 5 * 60 * 1000
	MaxInputBytes  = 6 << 20
	MaxOutputBytes = 6 << 20
	MaxConcurrency = 1024
)

// Manifest is the function owner's signed description of a function version.
type Manifest struct {
	Name         string       `json:"name"`
	Version      int          `json:"version"`
	Runtime      string       `json:"runtime"`
	ABI          string       `json:"abi"`
	Confidential string       `json:"confidential"`
	Limits       Limits       `json:"limits"`
	Capabilities Capabilities `json:"capabilities"`
	TEE          TEEPolicy    `json:"tee"`
	// Deployer is empty when the owner built and signed the bundle, and
	// DeployerGatewayTrusted when the gateway did, from source an OpenWhisk
	// client sent, with its per-namespace key (docs/openwhisk.md).
	Deployer string `json:"deployer,omitempty"`
	// Namespace is the namespace the owner signed the bundle for. The
	// coordinator registers a bundle only in that namespace, and refuses a
	// bundle without one (ErrUnbound); a worker refuses to serve a bundle
	// whose namespace differs from the one it is asked for. Absent from
	// bundles built before the field existed, which stay servable where
	// they were registered (docs/threat-model.md).
	Namespace string `json:"namespace,omitempty"`
	// Invokers, if set, is the function's invoker policy from this version
	// on: "owner", "any" or a list of caller keys (certs.Invokers). Unset,
	// the function keeps the policy it has, and a new function gets
	// "owner". The policy covers every version of the function, and the
	// owner can change it without deploying (docs/authority.md).
	Invokers *certs.Invokers `json:"invokers,omitempty"`
}

// DeployerGatewayTrusted marks a bundle the gateway built and signed for an
// OpenWhisk client: trusting it means trusting the gateway.
const DeployerGatewayTrusted = "gateway-trusted"

// Limits bound every invocation of the function.
type Limits struct {
	MemoryPages    uint32 `json:"memory_pages"`
	TimeoutMS      int    `json:"timeout_ms"`
	MaxInputBytes  int    `json:"max_input_bytes"`
	MaxOutputBytes int    `json:"max_output_bytes"`
	Concurrency    int    `json:"concurrency"`
	// Fuel is the instruction budget of one invocation (0: the platform
	// default, 50 billion); a function that runs out fails with fuel_exhausted.
	Fuel uint64 `json:"fuel,omitempty"`
}

// Capabilities are granted explicitly; everything else is denied.
type Capabilities struct {
	Clock  bool              `json:"clock,omitempty"`
	Random bool              `json:"random,omitempty"`
	Env    map[string]string `json:"env,omitempty"`
	// State grants the sealed key-value state (docs/state.md): the kv_*
	// host functions. Without it they return -5 (denied).
	State bool `json:"state,omitempty"`
}

// TEEPolicy names the TEE kinds that may run the function.
type TEEPolicy struct {
	Allow []tee.Kind `json:"allow,omitempty"`
	// MinTCB is the minimum platform TCB per kind, in the kind's notation
	// (sev-snp "bl=N,tee=N,snp=N,ucode=N"; tdx hex TEE_TCB_SVN). The
	// coordinator releases the function's key only to workers at or above it.
	MinTCB map[tee.Kind]string `json:"min_tcb,omitempty"`
}

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)
var envRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,127}$`)

// ValidName reports whether s is a valid function or namespace name.
func ValidName(s string) bool { return nameRE.MatchString(s) }

// DefaultManifest returns the manifest used when the owner gives none.
func DefaultManifest(name string) Manifest {
	m := Manifest{Name: name}
	m.ApplyDefaults()
	return m
}

// ApplyDefaults fills zero fields with defaults.
func (m *Manifest) ApplyDefaults() {
	if m.Runtime == "" {
		switch m.ABI {
		case ABIJS:
			m.Runtime = RuntimeJS
		case ABIPython:
			m.Runtime = RuntimePython
		default:
			m.Runtime = RuntimeWasm
		}
	}
	if m.ABI == "" {
		switch m.Runtime {
		case RuntimeJS:
			m.ABI = ABIJS
		case RuntimePython:
			m.ABI = ABIPython
		default:
			m.ABI = ABICommand
		}
	}
	if m.Confidential == "" {
		m.Confidential = ConfidentialRequired
	}
	l := &m.Limits
	if l.MemoryPages == 0 {
		l.MemoryPages = 256
	}
	if l.TimeoutMS == 0 {
		l.TimeoutMS = 5000
	}
	if l.MaxInputBytes == 0 {
		l.MaxInputBytes = 1 << 20
	}
	if l.MaxOutputBytes == 0 {
		l.MaxOutputBytes = 1 << 20
	}
	if l.Concurrency == 0 {
		l.Concurrency = 16
	}
}

// Validate checks a manifest with defaults applied.
func (m *Manifest) Validate() error {
	switch {
	case !ValidName(m.Name):
		return fmt.Errorf("%w: name %q must match %s", ErrManifest, m.Name, nameRE)
	case m.Version < 1:
		return fmt.Errorf("%w: version %d must be >= 1", ErrManifest, m.Version)
	case m.Runtime != RuntimeWasm && m.Runtime != RuntimeJS && m.Runtime != RuntimePython:
		return fmt.Errorf("%w: runtime %q is not supported (want %s, %s or %s)", ErrManifest, m.Runtime, RuntimeWasm, RuntimeJS, RuntimePython)
	case m.Runtime == RuntimeWasm && m.ABI != ABICommand && m.ABI != ABIReactor:
		return fmt.Errorf("%w: abi %q is not supported for runtime wasm (want %s or %s)", ErrManifest, m.ABI, ABICommand, ABIReactor)
	case m.Runtime == RuntimeJS && m.ABI != ABIJS:
		return fmt.Errorf("%w: abi %q is not supported for runtime js (want %s)", ErrManifest, m.ABI, ABIJS)
	case m.Runtime == RuntimePython && m.ABI != ABIPython:
		return fmt.Errorf("%w: abi %q is not supported for runtime python (want %s)", ErrManifest, m.ABI, ABIPython)
	case m.Namespace != "" && !ValidName(m.Namespace):
		return fmt.Errorf("%w: namespace %q must match %s", ErrManifest, m.Namespace, nameRE)
	case m.Deployer != "" && m.Deployer != DeployerGatewayTrusted:
		return fmt.Errorf("%w: deployer %q must be empty or %q", ErrManifest, m.Deployer, DeployerGatewayTrusted)
	case m.Confidential != ConfidentialRequired && m.Confidential != ConfidentialOptional:
		return fmt.Errorf("%w: confidential %q must be required or optional", ErrManifest, m.Confidential)
	case m.Limits.MemoryPages > MaxMemoryPages:
		return fmt.Errorf("%w: memory_pages %d over %d", ErrManifest, m.Limits.MemoryPages, MaxMemoryPages)
	case m.Limits.TimeoutMS < 0 || m.Limits.TimeoutMS > MaxTimeoutMS:
		return fmt.Errorf("%w: timeout_ms %d out of range", ErrManifest, m.Limits.TimeoutMS)
	case m.Limits.MaxInputBytes < 0 || m.Limits.MaxInputBytes > MaxInputBytes:
		return fmt.Errorf("%w: max_input_bytes %d out of range (max %d)", ErrManifest, m.Limits.MaxInputBytes, MaxInputBytes)
	case m.Limits.MaxOutputBytes < 0 || m.Limits.MaxOutputBytes > MaxOutputBytes:
		return fmt.Errorf("%w: max_output_bytes %d out of range (max %d)", ErrManifest, m.Limits.MaxOutputBytes, MaxOutputBytes)
	case m.Limits.Fuel > math.MaxInt64:
		return fmt.Errorf("%w: fuel %d over %d", ErrManifest, m.Limits.Fuel, uint64(math.MaxInt64))
	case m.Limits.Concurrency < 0 || m.Limits.Concurrency > MaxConcurrency:
		return fmt.Errorf("%w: concurrency %d out of range", ErrManifest, m.Limits.Concurrency)
	}
	for k, v := range m.Capabilities.Env {
		if !envRE.MatchString(k) || strings.HasPrefix(k, "CLOISTER_") {
			return fmt.Errorf("%w: env key %q (letters, digits and _; CLOISTER_ is reserved)", ErrManifest, k)
		}
		if strings.ContainsRune(v, 0) || len(v) > 4096 {
			return fmt.Errorf("%w: env value of %q has a NUL byte or is over 4096 bytes", ErrManifest, k)
		}
	}
	for _, k := range m.TEE.Allow {
		if !slices.Contains([]tee.Kind{tee.KindSim, tee.KindSEVSNP, tee.KindTDX}, k) {
			return fmt.Errorf("%w: unknown TEE kind %q", ErrManifest, k)
		}
	}
	for k, v := range m.TEE.MinTCB {
		if _, err := attest.TCBAtLeast(k, v, v); err != nil {
			return fmt.Errorf("%w: tee.min_tcb: %v", ErrManifest, err)
		}
	}
	return nil
}

// BoundTo reports whether the owner signed the manifest for namespace ns:
// nil if so, an error wrapping ErrNamespace if it names another namespace,
// and one wrapping ErrUnbound if it names none (a bundle built before the
// field existed).
func (m *Manifest) BoundTo(ns string) error {
	switch m.Namespace {
	case ns:
		return nil
	case "":
		return fmt.Errorf("%w: the bundle of %q names no namespace; build it again for namespace %q (cloister fn deploy does)", ErrUnbound, m.Name, ns)
	default:
		return fmt.Errorf("%w: the bundle of %q is signed for namespace %q, not %q", ErrNamespace, m.Name, m.Namespace, ns)
	}
}

// GuestEnv is the environment every instance of this function version sees:
// the granted env and the static metadata. Reactors see only this (their
// snapshot includes it, so it must be the same on every worker); commands
// also get per-invocation metadata.
func (m *Manifest) GuestEnv(namespace string) map[string]string {
	env := make(map[string]string, len(m.Capabilities.Env)+3)
	for k, v := range m.Capabilities.Env {
		env[k] = v
	}
	env["CLOISTER_NAMESPACE"] = namespace
	env["CLOISTER_FUNCTION"] = m.Name
	env["CLOISTER_VERSION"] = strconv.Itoa(m.Version)
	return env
}

// ParseManifest decodes a JSON manifest strictly (unknown fields are errors),
// applies defaults and validates it.
func ParseManifest(b []byte) (Manifest, error) {
	m, err := ParseManifestDraft(b)
	if err != nil {
		return Manifest{}, err
	}
	if err := m.Validate(); err != nil {
		return Manifest{}, err
	}
	return m, nil
}

// ParseManifestDraft decodes an owner's manifest file strictly, before the
// platform assigns its version: name and version may be absent. Defaults are
// applied; Build validates the result.
func ParseManifestDraft(b []byte) (Manifest, error) {
	var m Manifest
	if err := strictjson.Unmarshal(b, &m); err != nil {
		return Manifest{}, fmt.Errorf("%w: %v", ErrManifest, err)
	}
	m.ApplyDefaults()
	return m, nil
}

// ManifestFor is the manifest a deploy of file (a .js or .py script, or
// else a WebAssembly module) as function name signs: draft (JSON; empty: the
// defaults), named name, with the script's runtime unless draft chose
// one, and for Python without a draft DefaultPythonMemoryPages. Its
// namespace and version are the deployer's to set. Errors wrap
// ErrManifest.
func ManifestFor(name, file string, draft []byte) (Manifest, error) {
	if !ValidName(name) {
		return Manifest{}, fmt.Errorf("%w: invalid function name %q: use lower-case letters, digits, '-' and '_' (at most 63)", ErrManifest, name)
	}
	ext := strings.ToLower(filepath.Ext(file))
	m := DefaultManifest(name)
	hasDraft := len(bytes.TrimSpace(draft)) > 0
	if hasDraft {
		var err error
		if m, err = ParseManifestDraft(draft); err != nil {
			if !errors.Is(err, ErrManifest) {
				err = fmt.Errorf("%w: %w", ErrManifest, err)
			}
			return Manifest{}, err
		}
		if m.Name == "" {
			m.Name = name
		}
		if m.Name != name {
			return Manifest{}, fmt.Errorf("%w: the manifest names function %q, not %q", ErrManifest, m.Name, name)
		}
	}
	// A script: its language's runtime, unless the manifest chose
	// otherwise (the coordinator then refuses what does not fit).
	if m.Runtime == RuntimeWasm && m.ABI == ABICommand {
		switch ext {
		case ".js":
			m.Runtime, m.ABI = RuntimeJS, ABIJS
		case ".py":
			m.Runtime, m.ABI = RuntimePython, ABIPython
			if !hasDraft {
				// The interpreter takes about 15 MiB of the limit
				// (docs/python.md): give a call room beside it.
				m.Limits.MemoryPages = DefaultPythonMemoryPages
			}
		}
	}
	return m, nil
}
