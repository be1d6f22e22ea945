package strictjson

import "testing"

func TestUnmarshal(t *testing.T) {
	type T struct {
		A int `json:"a"`
	}
	for _, c := range []struct {
		in string
		ok bool
	}{
		{`{"a":1}`, true},
		{` {"a":1} `, true},
		{`{"a":1}{"a":2}`, false},
		{`{"a":1} x`, false},
		{`{"a":1,"b":2}`, false},
		{`{"a":`, false},
		{``, false},
	} {
		var v T
		err := Unmarshal([]byte(c.in), &v)
		if (err == nil) != c.ok {
			t.Errorf("Unmarshal(%q): got %v, want ok=%v", c.in, err, c.ok)
		}
	}
}
