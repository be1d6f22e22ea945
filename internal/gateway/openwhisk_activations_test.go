package gateway

import (
	"testing"

	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/wire"
)

// TestOWResult: an activation's result in OpenWhisk's shape, a JSON object
// whatever the function wrote.
func TestOWResult(t *testing.T) {
	for _, tc := range []struct {
		name string
		resp wire.ActivationResponse
		want string
	}{
		{"object", wire.ActivationResponse{Result: []byte(`{"a":1}`)}, `{"a":1}`},
		{"object after whitespace", wire.ActivationResponse{Result: []byte(" \n\t{\"a\":1}")}, " \n\t{\"a\":1}"},
		{"array", wire.ActivationResponse{Result: []byte(`[1,2]`)}, `{"output":[1,2]}`},
		{"null", wire.ActivationResponse{Result: []byte(`null`)}, `{"output":null}`},
		{"JSON string", wire.ActivationResponse{Result: []byte(`"hi"`)}, `{"output":"hi"}`},
		{"text", wire.ActivationResponse{Result: []byte(`hello`)}, `{"output":"hello"}`},
		{"broken object", wire.ActivationResponse{Result: []byte(`{"a":`)}, `{"output":"{\"a\":"}`},
		{"two objects", wire.ActivationResponse{Result: []byte(`{} {}`)}, `{"output":"{} {}"}`},
		{"empty", wire.ActivationResponse{}, `{}`},
		{"sealed", wire.ActivationResponse{Sealed: true, Result: []byte(`{"a":1}`)}, `{}`},
		{"error", wire.ActivationResponse{Error: apierr.New(apierr.Timeout, "too slow")}, `{"code":"timeout","error":"too slow"}`},
	} {
		if got := string(owResult(&wire.Activation{Response: tc.resp})); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, got, tc.want)
		}
	}
}
