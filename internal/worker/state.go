package worker

import (
	"context"
	"errors"
	"fmt"

	"github.com/cloister-faas/cloister/internal/sandbox"
	"github.com/cloister-faas/cloister/internal/state"
)

// stateKV adapts a function's sealed state to the sandbox's KV: the
// errors a guest can handle become the sandbox's codes; the others
// (integrity, availability) fail the invocation.
type stateKV struct{ f *state.Function }

func kvError(err error) error {
	switch {
	case errors.Is(err, state.ErrInvalidKey):
		return fmt.Errorf("%w: %v", sandbox.ErrKVInvalid, err)
	case errors.Is(err, state.ErrValueTooLarge):
		return fmt.Errorf("%w: %v", sandbox.ErrKVTooLarge, err)
	case errors.Is(err, state.ErrQuota):
		return fmt.Errorf("%w: %v", sandbox.ErrKVQuota, err)
	}
	return err
}

func (s stateKV) Get(ctx context.Context, key []byte) ([]byte, bool, error) {
	v, ok, err := s.f.Get(ctx, key)
	return v, ok, kvError(err)
}

func (s stateKV) Put(ctx context.Context, key, value []byte) error {
	return kvError(s.f.Put(ctx, key, value))
}

func (s stateKV) Delete(ctx context.Context, key []byte) (bool, error) {
	ok, err := s.f.Delete(ctx, key)
	return ok, kvError(err)
}

func (s stateKV) CompareAndSwap(ctx context.Context, key, oldValue []byte, oldPresent bool, newValue []byte, newPresent bool) (bool, error) {
	ok, err := s.f.CompareAndSwap(ctx, key, oldValue, oldPresent, newValue, newPresent)
	return ok, kvError(err)
}

func (s stateKV) List(ctx context.Context, prefix, start []byte, limit int) ([][]byte, bool, error) {
	keys, more, err := s.f.List(ctx, prefix, start, limit)
	return keys, more, kvError(err)
}

// NewStateKV returns the sandbox's view of a function's sealed state, as
// the worker attaches it to an invocation (for the benchmarks).
func NewStateKV(f *state.Function) sandbox.KV { return stateKV{f} }
