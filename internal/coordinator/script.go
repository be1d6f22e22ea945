package coordinator

import (
	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/bundle"
	"github.com/cloister-faas/cloister/internal/jsrt"
	"github.com/cloister-faas/cloister/internal/pyrt"
)

// checkScript is the coordinator's own check of a JavaScript or Python
// function's script, in Go and without running anything: size, UTF-8, no
// NUL byte. Compiling (JavaScript) or importing (Python) it in the engine
// is the inspecting worker's (inspectBundle).
func checkScript(runtime string, script []byte) error {
	check := jsrt.CheckScript
	if runtime == bundle.RuntimePython {
		check = pyrt.CheckScript
	}
	if err := check(script); err != nil {
		return apierr.Wrap(apierr.InvalidModule, err)
	}
	return nil
}
