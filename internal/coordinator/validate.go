package coordinator

import (
	"context"
	"errors"

	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/bundle"
	"github.com/cloister-faas/cloister/internal/sandbox"
)

// validateModule checks a bundle's module with the same sandbox checks the
// workers apply, so that a module they would refuse is refused at deploy.
func (c *Coordinator) validateModule(ctx context.Context, m bundle.Manifest, wasm []byte) error {
	err := c.engine.Validate(ctx, wasm, sandbox.Limits{MemoryPages: m.Limits.MemoryPages})
	switch {
	case err == nil:
		return nil
	case errors.Is(err, sandbox.ErrMemoryLimit):
		return apierr.New(apierr.MemoryLimit, "%v", err)
	case errors.Is(err, sandbox.ErrInvalidModule), errors.Is(err, sandbox.ErrInvalidLimits):
		return apierr.New(apierr.InvalidModule, "%v", err)
	default:
		return err
	}
}
