package sandbox

import (
	"context"
	"reflect"
	"strings"
)

// wazeroPkgPrefix is the import path prefix of the types wazero uses as
// context keys for its experimental options.
const wazeroPkgPrefix = "github.com/tetratelabs/wazero"

// isolatedContext passes through its parent's deadline, cancellation and
// values, except the values that wazero reads as options. wazero takes some
// options from the context rather than from its config (experimental socket
// listeners, function listeners, memory allocators, snapshotting); stripping
// them means the caller's context can never widen what a guest is granted.
type isolatedContext struct {
	context.Context
}

// isolate returns ctx without wazero's context options.
func isolate(ctx context.Context) context.Context {
	return isolatedContext{ctx}
}

// Value implements context.Context.
func (c isolatedContext) Value(key any) any {
	if isWazeroKey(key) {
		return nil
	}
	return c.Context.Value(key)
}

// isWazeroKey reports whether key's type is declared in a wazero package.
func isWazeroKey(key any) bool {
	t := reflect.TypeOf(key)
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t != nil && strings.HasPrefix(t.PkgPath(), wazeroPkgPrefix)
}
