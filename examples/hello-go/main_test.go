package main

import (
	"encoding/json"
	"strings"
	"testing"
)

func fakeEnv(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

func TestRespond(t *testing.T) {
	env := fakeEnv(map[string]string{"CLOISTER_FUNCTION": "hello"})
	tests := []struct {
		name  string
		input string
		want  response
	}{
		{"name", `{"name":"Ada"}`, response{"Hello, Ada!", "hello", 14}},
		{"empty input", ``, response{"Hello, world!", "hello", 0}},
		{"whitespace input", " \n", response{"Hello, world!", "hello", 2}},
		{"empty object", `{}`, response{"Hello, world!", "hello", 2}},
		{"empty name", `{"name":""}`, response{"Hello, world!", "hello", 11}},
		{"unknown fields ignored", `{"name":"Bo","x":1}`, response{"Hello, Bo!", "hello", 19}},
		{"needs escaping", `{"name":"\"Q\" \u00e9"}`, response{`Hello, "Q" é!`, "hello", 23}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := respond([]byte(tt.input), env)
			if err != nil {
				t.Fatalf("respond: %v", err)
			}
			if !strings.HasSuffix(string(out), "\n") {
				t.Errorf("output %q does not end in a newline", out)
			}
			var got response
			if err := json.Unmarshal(out, &got); err != nil {
				t.Fatalf("output %q is not JSON: %v", out, err)
			}
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestRespondExactBytes(t *testing.T) {
	out, err := respond([]byte(`{"name":"Ada"}`), fakeEnv(map[string]string{"CLOISTER_FUNCTION": "greeter"}))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"greeting":"Hello, Ada!","function":"greeter","bytes":14}` + "\n"
	if string(out) != want {
		t.Errorf("got %q, want %q", out, want)
	}
}

func TestRespondMissingEnv(t *testing.T) {
	out, err := respond([]byte(`{"name":"Ada"}`), fakeEnv(nil))
	if err != nil {
		t.Fatal(err)
	}
	var got response
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatal(err)
	}
	if got.Function != "" {
		t.Errorf("function = %q, want empty", got.Function)
	}
}

func TestRespondMalformed(t *testing.T) {
	for _, in := range []string{`{`, `not json`, `{"name":42}`, `[1,2]`, `{"name":"a"} trailing`} {
		if out, err := respond([]byte(in), fakeEnv(nil)); err == nil {
			t.Errorf("respond(%q) = %q, want error", in, out)
		}
	}
}
