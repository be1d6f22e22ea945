// Package strictjson decodes JSON that crosses a trust boundary strictly:
// exactly one value, no unknown fields, nothing after it. It never accepts
// input that another strict decoder would read differently.
package strictjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
)

// ErrTrailing means the input held more than one JSON value.
var ErrTrailing = errors.New("unexpected data after the JSON value")

// Unmarshal decodes b into v, refusing unknown fields and trailing data.
func Unmarshal(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return ErrTrailing
	}
	return nil
}
