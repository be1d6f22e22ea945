package bus

import (
	"fmt"
	"testing"
	"time"
)

// TestFollowerOrder: revisions only move forward, whatever order the
// watch, reads and the follower's own writes report them in (the watch
// lags behind the writes; this test plays its deliveries by hand).
func TestFollowerOrder(t *testing.T) {
	f := &Follower{prefix: "a.", synced: true, entries: map[string]followed{}, absent: map[string]time.Time{}}
	state := func(key string) string {
		t.Helper()
		e, ok := f.cached(key)
		switch {
		case !ok:
			return "<unknown>"
		case e.deleted:
			return "<deleted>"
		}
		return string(e.value)
	}
	check := func(step, key, want string) {
		t.Helper()
		if got := state(key); got != want {
			t.Fatalf("%s: %s is %s, want %s", step, key, got, want)
		}
	}

	f.record("a.k", 5, []byte("v5"), false)
	f.record("a.k", 4, []byte("v4"), false)
	check("an older put delivered late", "a.k", "v5")
	// Delete here removed revision 5: the watch's late delivery of that
	// put must not revive it, its delete marker (7) confirms it.
	f.record("a.k", 5, nil, true)
	f.record("a.k", 5, []byte("v5"), false)
	check("the deleted revision delivered late", "a.k", "<deleted>")
	f.record("a.k", 7, nil, true)
	f.record("a.k", 8, []byte("v8"), false)
	check("a newer put", "a.k", "v8")

	// A read that finds nothing confirms an absence, never a known entry
	// (it may have been answered before that entry's write).
	f.recordAbsent("a.k")
	check("a read that found nothing after a put", "a.k", "v8")
	f.recordAbsent("a.new")
	check("a read that found nothing", "a.new", "<deleted>")
	f.record("a.new", 3, []byte("v3"), false)
	check("the watch's put after the empty read", "a.new", "v3")

	// Keys outside the prefix are never kept.
	f.record("t.k", 9, []byte("x"), false)
	f.recordAbsent("t.none")
	check("outside the prefix", "t.k", "<unknown>")
	check("outside the prefix", "t.none", "<unknown>")
	if len(f.entries) != 2 || len(f.absent) != 0 {
		t.Fatalf("%d entries and %d absences kept, want 2 and 0", len(f.entries), len(f.absent))
	}

	// Absences found by reads are bounded: a caller may ask for any name.
	for i := range 3 * maxAbsent {
		f.recordAbsent(fmt.Sprintf("a.missing-%d", i))
	}
	if len(f.absent) > maxAbsent {
		t.Fatalf("%d absences kept, want at most %d", len(f.absent), maxAbsent)
	}
	check("a recent absence", fmt.Sprintf("a.missing-%d", 3*maxAbsent-1), "<deleted>")
	check("a known entry, after many absences", "a.k", "v8")
}
