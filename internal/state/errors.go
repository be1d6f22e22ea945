package state

import (
	"errors"
	"fmt"
)

// Sentinel errors. Callers test them with errors.Is.
var (
	// ErrIntegrity means the untrusted store returned something that is not
	// the current committed value: see IntegrityError for which attack.
	ErrIntegrity = errors.New("state integrity violated")
	// ErrInvalidKey means a key is empty or longer than MaxKeyBytes.
	ErrInvalidKey = errors.New("invalid state key")
	// ErrValueTooLarge means a value is over the store's value limit.
	ErrValueTooLarge = errors.New("state value too large")
	// ErrQuota means a write would exceed the function's key count or
	// total byte limit.
	ErrQuota = errors.New("state quota exceeded")
	// ErrUnavailable means the store or the anchor could not be reached.
	ErrUnavailable = errors.New("state store unavailable")
	// ErrClosed means the store was closed.
	ErrClosed = errors.New("state store closed")
)

// Kinds of integrity violation.
const (
	KindRollback = "rollback" // an older version of the key was returned
	KindSwap     = "swap"     // the value does not authenticate for this key and function
	KindReplay   = "replay"   // a deleted key was brought back
	KindMissing  = "missing"  // the committed value is gone from the store
)

// KindAnchor is an anchor reply that was forged, altered or replayed.
const KindAnchor = "anchor reply"

// IntegrityError describes a detected violation. It wraps ErrIntegrity.
// Its message names the function and the kind, never the key or the value.
type IntegrityError struct {
	Function string // "namespace/name"
	Kind     string
	Detail   string
}

func (e *IntegrityError) Error() string {
	return fmt.Sprintf("state of %s: %s detected: %s", e.Function, e.Kind, e.Detail)
}

// Unwrap makes errors.Is(err, ErrIntegrity) true.
func (e *IntegrityError) Unwrap() error { return ErrIntegrity }
