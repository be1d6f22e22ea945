package node

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestClientEnvSources: client.env round-trips through ReadEnvFile, and a
// shell that sources it exports every value unchanged (`up` tells users to
// source it), spaces and quotes included.
func TestClientEnvSources(t *testing.T) {
	vals := [][2]string{
		{"CLOISTER_URL", "http://127.0.0.1:8080"},
		{"CLOISTER_TOKEN", "clk_abc-DEF_123"},
		{"CLOISTER_POLICY", "/home/a user/it's here/$HOME/`x`/policy.json"},
		{"CLOISTER_NAMESPACE", ""},
	}
	path := filepath.Join(t.TempDir(), "client.env")
	if err := os.WriteFile(path, formatEnv("test", vals...), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := ReadEnvFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range vals {
		if got[kv[0]] != kv[1] {
			t.Errorf("ReadEnvFile: %s = %q, want %q", kv[0], got[kv[0]], kv[1])
		}
	}
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh to source the file with")
	}
	// env -i: only what the file exports reaches the child.
	out, err := exec.Command("env", "-i", sh, "-c", `. "$0" && env`, path).Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range vals {
		if !strings.Contains(string(out), kv[0]+"="+kv[1]+"\n") {
			t.Errorf("sourced in sh, %s is not exported as %q:\n%s", kv[0], kv[1], out)
		}
	}
	// Files written by hand, and the OpenWhisk wskprops, still read.
	os.WriteFile(path, []byte("A=plain\nexport B=\"double quoted\"\nAPIHOST=http://h:1\n"), 0o600)
	got, _ = ReadEnvFile(path)
	if got["A"] != "plain" || got["B"] != "double quoted" || got["APIHOST"] != "http://h:1" {
		t.Errorf("hand-written file: %v", got)
	}
}
