package main

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestReadmeDemo runs the README's demo (its first `console` block after
// "## Demo") against a real `cloister up` and compares every command's
// output with the README's, hashes, ids, times and paths aside, so that
// the README cannot drift from what the CLI prints.
func TestReadmeDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	steps := readmeDemo(t, repo("README.md"))
	if len(steps) < 5 {
		t.Fatalf("found %d commands in the README's demo", len(steps))
	}
	dir := t.TempDir()
	if err := os.Symlink(repo("examples"), filepath.Join(dir, "examples")); err != nil {
		t.Fatal(err)
	}
	s := startUp(t, dir)
	defer s.stop()
	for _, st := range steps {
		args := strings.Fields(st.cmd)
		switch {
		case strings.HasPrefix(st.cmd, "go build "):
			continue // the test's binary is built already
		case args[0] == "./cloister":
			r := s.cli(cliArgs(t, st.cmd)...)
			got := normalise(r.stdout + r.stderr)
			if want := normalise(st.out); got != want {
				t.Errorf("$ %s\ngot:\n%s\nwant (README):\n%s", st.cmd, got, want)
			}
		default:
			// A shell line of the demo (echo ... > file).
			c := exec.Command("sh", "-c", st.cmd)
			c.Dir = dir
			if out, err := c.CombinedOutput(); err != nil {
				t.Fatalf("$ %s: %v\n%s", st.cmd, err, out)
			}
		}
	}
}

// demoStep is a command of the README's demo and what it printed.
type demoStep struct{ cmd, out string }

func readmeDemo(t *testing.T, path string) []demoStep {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var steps []demoStep
	inDemo, inBlock := false, false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "## "):
			if inDemo && len(steps) > 0 {
				return steps
			}
			inDemo = line == "## Demo"
		case !inDemo:
		case strings.HasPrefix(line, "```console"):
			inBlock = true
		case strings.HasPrefix(line, "```") && inBlock:
			return steps
		case !inBlock:
		case strings.HasPrefix(line, "$ "):
			steps = append(steps, demoStep{cmd: strings.TrimPrefix(line, "$ ")})
		case len(steps) > 0:
			steps[len(steps)-1].out += line + "\n"
		}
	}
	return steps
}

// cliArgs splits a demo command line into the CLI's arguments (single
// quotes group, as in a shell).
func cliArgs(t *testing.T, line string) []string {
	t.Helper()
	var args []string
	var cur strings.Builder
	quoted, in := false, false
	for _, r := range strings.TrimPrefix(line, "./cloister ") {
		switch {
		case r == '\'':
			quoted, in = !quoted, true
		case r == ' ' && !quoted:
			if in {
				args = append(args, cur.String())
				cur.Reset()
				in = false
			}
		default:
			cur.WriteRune(r)
			in = true
		}
	}
	if quoted {
		t.Fatalf("unbalanced quotes in %q", line)
	}
	if in {
		args = append(args, cur.String())
	}
	return args
}

var (
	hexRE  = regexp.MustCompile(`[0-9a-f]{12,}`)
	timeRE = regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ`)
	keyRE  = regexp.MustCompile(`\S*/owner\.key`)
)

// normalise replaces what differs from run to run: hex hashes and ids,
// times, and the owner key's path.
func normalise(s string) string {
	s = hexRE.ReplaceAllString(s, "<hex>")
	s = timeRE.ReplaceAllString(s, "<time>")
	s = keyRE.ReplaceAllString(s, "<key>")
	return strings.TrimSpace(s)
}
