package async

import (
	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/wire"
)

// Outcome maps a worker reply to an activation response.
func Outcome(req *wire.InvokeRequest, rep *wire.InvokeReply) wire.ActivationResponse {
	r := wire.ActivationResponse{Sealed: req.Mode != wire.ModePlain}
	if rep.Error == nil {
		r.Status, r.Success = wire.StatusSuccess, true
		r.Result = rep.Output
		if r.Sealed {
			r.Result = rep.Ciphertext
		}
		return r
	}
	r.Error, r.Step, r.StepCode = rep.Error, rep.Step, rep.StepCode
	code := rep.Error.Code
	if rep.StepCode != "" {
		code = rep.StepCode
	}
	if code == apierr.FunctionExit {
		r.Status = wire.StatusApplicationError
	} else {
		r.Status = wire.StatusDeveloperError
	}
	return r
}

// LogLines splits a function's stderr into an activation's log lines, at
// most MaxLogLines of them.
func LogLines(b []byte) []string {
	var out []string
	for len(b) > 0 && len(out) < MaxLogLines {
		i := 0
		for i < len(b) && b[i] != '\n' {
			i++
		}
		out = append(out, string(b[:i]))
		if i < len(b) {
			i++
		}
		b = b[i:]
	}
	return out
}
