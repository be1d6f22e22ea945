package coordinator

import (
	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/jsrt"
)

// checkScript is the coordinator's own check of a JavaScript function's
// script, in Go and without running anything: size, UTF-8, no NUL byte.
// Compiling it in the engine is the inspecting worker's (inspectBundle).
func checkScript(script []byte) error {
	if err := jsrt.CheckScript(script); err != nil {
		return apierr.Wrap(apierr.InvalidModule, err)
	}
	return nil
}
