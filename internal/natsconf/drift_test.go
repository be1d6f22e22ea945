package natsconf_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/cloister-faas/cloister/internal/bus"
	"github.com/cloister-faas/cloister/internal/natsconf"
)

// matches reports whether the NATS subject pattern p (with * and >)
// matches subject s.
func matches(p, s string) bool {
	pt, st := strings.Split(p, "."), strings.Split(s, ".")
	for i, t := range pt {
		if t == ">" {
			return len(st) > i
		}
		if i >= len(st) || t != "*" && t != st[i] {
			return false
		}
	}
	return len(pt) == len(st)
}

func TestMatches(t *testing.T) {
	for _, c := range []struct {
		p, s string
		want bool
	}{
		{"a.b", "a.b", true}, {"a.*", "a.b", true}, {"a.*", "a.b.c", false},
		{"a.>", "a.b.c", true}, {"a.>", "a", false}, {"a.b", "a.c", false}, {"a.b.c", "a.b", false},
	} {
		if got := matches(c.p, c.s); got != c.want {
			t.Errorf("matches(%q, %q) = %v, want %v", c.p, c.s, got, c.want)
		}
	}
}

// busSubjects returns every string constant named Subject* in internal/bus,
// so that a subject added there without a permission fails this test.
func busSubjects(t *testing.T) map[string]string {
	t.Helper()
	fset := token.NewFileSet()
	dir := filepath.Join("..", "bus")
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".go") || strings.HasSuffix(e.Name(), "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, filepath.Join(dir, e.Name()), nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			g, ok := d.(*ast.GenDecl)
			if !ok || g.Tok != token.CONST {
				continue
			}
			for _, spec := range g.Specs {
				vs := spec.(*ast.ValueSpec)
				for i, id := range vs.Names {
					if !strings.HasPrefix(id.Name, "Subject") || i >= len(vs.Values) {
						continue
					}
					lit, ok := vs.Values[i].(*ast.BasicLit)
					if !ok || lit.Kind != token.STRING {
						t.Errorf("%s is not a string literal; read it some other way", id.Name)
						continue
					}
					v, err := strconv.Unquote(lit.Value)
					if err != nil {
						t.Fatal(err)
					}
					out[id.Name] = v
				}
			}
		}
	}
	if out["SubjectInvoke"] != bus.SubjectInvoke {
		t.Fatalf("reading internal/bus: got %v", out)
	}
	return out
}

// TestEverySubjectHasPermissions checks that each subject of internal/bus
// has a publisher and, unless a stream stores it, a subscriber among the
// roles, and prints who may do what.
func TestEverySubjectHasPermissions(t *testing.T) {
	// Subjects that only streams take (nobody subscribes: they are read
	// through the JetStream API).
	stored := map[string]bool{bus.SubjectAsyncPrefix: true, bus.SubjectDeadPrefix: true,
		bus.SubjectAnchorJournal: true, bus.SubjectLedgerJournal: true, bus.SubjectControlJournal: true,
		bus.SubjectReplay: true}
	perms := map[natsconf.Role]natsconf.Permissions{}
	for _, r := range natsconf.Roles {
		p, err := natsconf.PermissionsFor(r)
		if err != nil {
			t.Fatal(err)
		}
		perms[r] = p
	}
	can := func(list []string, s string) bool {
		for _, p := range list {
			if matches(p, s) {
				return true
			}
		}
		return false
	}
	subjects := busSubjects(t)
	for _, name := range slices.Sorted(maps.Keys(subjects)) {
		subj := subjects[name]
		s := subj
		if strings.HasSuffix(s, ".") {
			s += "x"
		}
		var pub, sub []string
		for _, r := range natsconf.Roles {
			if can(perms[r].Publish, s) {
				pub = append(pub, string(r))
			}
			if can(perms[r].Subscribe, s) {
				sub = append(sub, string(r))
			}
		}
		t.Logf("%-24s %-34s publish %v subscribe %v", name, subj, pub, sub)
		if len(pub) == 0 {
			t.Errorf("%s (%s): no role may publish it; add it to natsconf.PermissionsFor", name, subj)
		}
		if len(sub) == 0 && !stored[subj] {
			t.Errorf("%s (%s): no role may subscribe to it; add it to natsconf.PermissionsFor", name, subj)
		}
	}
}
