package trigger

import (
	"strings"
	"testing"

	"github.com/cloister-faas/cloister/internal/bundle"
)

func TestBusSubject(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"a", "events.shop.a"},
		{"a.b", "events.shop.a.b"},
		{"a.*.c", "events.shop.a.*.c"},
		{"a.>", "events.shop.a.>"},
		{"orders-eu.new", "events.shop.orders-eu.new"},
		{"events.shop.a", "events.shop.a"},
		{"events.shop.>", "events.shop.>"},
		{"events.shop.*.x", "events.shop.*.x"},
		{"Orders_2026", "events.shop.Orders_2026"},
	} {
		got, err := BusSubject("shop", c.in)
		if err != nil || got != c.want {
			t.Errorf("BusSubject(shop, %q) = %q, %v; want %q", c.in, got, err, c.want)
		}
	}
	for _, s := range []string{
		// Leading wildcards would match the internal bus.
		">", "*", "*.>", "*.invoke.w.*", "*.*.*",
		// System prefixes.
		"cloister.invoke", "cloister.invoke.w.x", "cloister", "$JS.API.x", "$KV.cloister_activations.>", "$SYS.>", "_INBOX.x", "_R_.x",
		// Other namespaces, and the event space itself.
		"events.other.a", "events.*.a", "events.>", "events.shop", "events.shop.", "events.shopx.a", "events",
		// Malformed.
		"", "a..b", ".a", "a.", "a.>.b", "a b", "a.b*", "a.\tb", "a.é", "a.b\x00", strings.Repeat("a", MaxSubject),
	} {
		if got, err := BusSubject("shop", s); err == nil {
			t.Errorf("BusSubject(shop, %q) = %q, want an error", s, got)
		}
	}
}

func TestValidSubject(t *testing.T) {
	for _, c := range []struct{ ns, subj string }{
		{"shop", "events.shop.a"}, {"shop", "events.shop.>"}, {"b", "events.b.*.x"},
	} {
		if err := ValidSubject(c.ns, c.subj); err != nil {
			t.Errorf("ValidSubject(%q, %q): %v", c.ns, c.subj, err)
		}
	}
	// Stored before subjects were confined, or written to the bucket by
	// someone else: none of these may be subscribed.
	for _, c := range []struct{ ns, subj string }{
		{"shop", ">"}, {"shop", "*.invoke.w.*"}, {"shop", "shop.orders"}, {"shop", "events.b.x"},
		{"shop", "events.shop"}, {"shop.x", "events.shop.x.y"}, {"*", "events.*.x"}, {"", "events..x"},
	} {
		if err := ValidSubject(c.ns, c.subj); err == nil {
			t.Errorf("ValidSubject(%q, %q) = nil, want an error", c.ns, c.subj)
		}
	}
}

func FuzzBusSubject(f *testing.F) {
	for _, s := range []string{"a.b", "*.>", "events.ns.x", "events.other.>", "$KV.x", ">"} {
		f.Add("ns", s)
	}
	f.Fuzz(func(t *testing.T, ns, subj string) {
		got, err := BusSubject(ns, subj)
		if err != nil {
			return
		}
		// Whatever it accepts is a subject under the namespace's own
		// space, with a literal namespace token: it cannot match a
		// subject of the platform or of another namespace.
		if !bundle.ValidName(ns) || !strings.HasPrefix(got, EventSpace(ns)) || ValidSubject(ns, got) != nil {
			t.Fatalf("BusSubject(%q, %q) = %q", ns, subj, got)
		}
		for _, tok := range strings.Split(got, ".")[:2] {
			if tok == "*" || tok == ">" {
				t.Fatalf("BusSubject(%q, %q) = %q: a wildcard in the prefix", ns, subj, got)
			}
		}
	})
}
