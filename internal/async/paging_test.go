package async

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/wire"
)

// countingKV counts the records read from the activations bucket.
type countingKV struct {
	jetstream.KeyValue
	gets *atomic.Int64
}

func (kv countingKV) Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	kv.gets.Add(1)
	return kv.KeyValue.Get(ctx, key)
}

// recordMany stores n finished activations in ns, one a millisecond apart
// from base, named by name(i), and returns their ids, oldest first.
func recordMany(t *testing.T, s *Store, ns string, base time.Time, n int, name func(int) string) []string {
	t.Helper()
	ids := make([]string, n)
	for i := range ids {
		ids[i] = NewID(base.Add(time.Duration(i) * time.Millisecond))
	}
	var g errgroup.Group
	g.SetLimit(16)
	for i, id := range ids {
		g.Go(func() error {
			return s.Record(context.Background(), &wire.Activation{ActivationID: id, Namespace: ns, Name: name(i), Status: wire.StatusSuccess})
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	return ids
}

// pageAll follows the cursor from the newest activation to the oldest and
// returns the ids seen, in order, and the records each page read.
func pageAll(t *testing.T, s *Store, gets *atomic.Int64, ns string, o ListOptions) (ids []string, reads []int64) {
	t.Helper()
	for pages := 0; ; pages++ {
		if pages > 1000 {
			t.Fatalf("no end after %d pages", pages)
		}
		before := gets.Load()
		list, next, err := s.ListPage(context.Background(), ns, o)
		if err != nil {
			t.Fatalf("page %d (before %q): %v", pages, o.Before, err)
		}
		reads = append(reads, gets.Load()-before)
		for _, a := range list {
			ids = append(ids, a.ActivationID)
		}
		if next == "" {
			return ids, reads
		}
		if len(list) > 0 && next != list[len(list)-1].ActivationID && o.Name == "" && o.Keep == nil {
			t.Fatalf("page %d: next %s, want the last id of the page %s", pages, next, list[len(list)-1].ActivationID)
		}
		o.Before = next
	}
}

// TestListPagesWithCursor pages through 450 activations (and another
// namespace's): every one once, newest first, no gap, and a page reads
// its own records, not those before it.
func TestListPagesWithCursor(t *testing.T) {
	s, st := open(t)
	var gets atomic.Int64
	st.Activations = countingKV{KeyValue: st.Activations, gets: &gets}
	base := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	ids := recordMany(t, s, "ns", base, 450, func(i int) string { return []string{"f", "g", "h"}[i%3] })
	recordMany(t, s, "other", base, 20, func(int) string { return "f" })

	for _, limit := range []int{1, 7, 100, 200} {
		got, reads := pageAll(t, s, &gets, "ns", ListOptions{Limit: limit})
		if len(got) != len(ids) {
			t.Fatalf("limit %d: %d activations, want %d", limit, len(got), len(ids))
		}
		for i, id := range got {
			if want := ids[len(ids)-1-i]; id != want {
				t.Fatalf("limit %d: activation %d is %s, want %s (newest first, each once)", limit, i, id, want)
			}
		}
		for p, n := range reads {
			if n > int64(limit) {
				t.Fatalf("limit %d: page %d read %d records, want at most %d", limit, p, n, limit)
			}
		}
	}

	// A deep page costs what a first page does.
	gets.Store(0)
	list, next, err := s.ListPage(context.Background(), "ns", ListOptions{Limit: 10, Before: ids[15]})
	if err != nil || len(list) != 10 || list[0].ActivationID != ids[14] || next != ids[5] {
		t.Fatalf("deep page: %d activations, next %q, %v", len(list), next, err)
	}
	if n := gets.Load(); n != 10 {
		t.Errorf("a deep page read %d records, want 10", n)
	}
	// The last page ends the listing.
	list, next, err = s.ListPage(context.Background(), "ns", ListOptions{Limit: 10, Before: ids[3]})
	if err != nil || len(list) != 3 || next != "" {
		t.Fatalf("last page: %d activations, next %q, %v; want 3 and none", len(list), next, err)
	}

	// A filtered listing pages through its own activations only.
	got, _ := pageAll(t, s, &gets, "ns", ListOptions{Limit: 40, Name: "g"})
	var want []string
	for i := len(ids) - 1; i >= 0; i-- {
		if i%3 == 1 {
			want = append(want, ids[i])
		}
	}
	if len(got) != len(want) {
		t.Fatalf("name g: %d activations, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("name g: activation %d is %s, want %s", i, got[i], want[i])
		}
	}
	// Skip counts from the cursor.
	list, _, err = s.ListPage(context.Background(), "ns", ListOptions{Limit: 2, Skip: 3, Before: ids[100]})
	if err != nil || len(list) != 2 || list[0].ActivationID != ids[96] || list[1].ActivationID != ids[95] {
		t.Fatalf("skip after a cursor: %v %v", list, err)
	}
	// Another namespace is its own listing.
	if got, _ := pageAll(t, s, &gets, "other", ListOptions{Limit: 6}); len(got) != 20 {
		t.Fatalf("other namespace: %d activations, want 20", len(got))
	}
}

func TestListPageBadCursor(t *testing.T) {
	s, _ := open(t)
	for _, before := range []string{"zz", "0123", "0123456789ABCDEF0123456789ABCDEF", "a.ns.0123456789abcdef0123456789abcdef"} {
		if _, _, err := s.ListPage(context.Background(), "ns", ListOptions{Before: before}); apierr.CodeOf(err) != apierr.BadRequest {
			t.Errorf("before %q: got %v, want %s", before, err, apierr.BadRequest)
		}
	}
	// A well-formed id that matches nothing is a cursor like any other.
	list, next, err := s.ListPage(context.Background(), "ns", ListOptions{Before: NewID(time.Now())})
	if err != nil || len(list) != 0 || next != "" {
		t.Fatalf("an unknown cursor: %v %q %v", list, next, err)
	}
}

// TestListPageScanBound: a filter that keeps nothing stops at MaxListScan
// records and hands back a cursor to go on from there.
func TestListPageScanBound(t *testing.T) {
	if testing.Short() {
		t.Skip("records 4,000 activations")
	}
	s, st := open(t)
	var gets atomic.Int64
	st.Activations = countingKV{KeyValue: st.Activations, gets: &gets}
	base := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	n := MaxListScan + 50
	ids := recordMany(t, s, "ns", base, n, func(i int) string {
		if i == 0 {
			return "rare"
		}
		return "common"
	})
	gets.Store(0)
	list, next, err := s.ListPage(context.Background(), "ns", ListOptions{Name: "rare"})
	if err != nil || len(list) != 0 || next != ids[n-MaxListScan] {
		t.Fatalf("first page: %d activations, next %q, %v; want none and next %s", len(list), next, err, ids[n-MaxListScan])
	}
	if r := gets.Load(); r != MaxListScan {
		t.Errorf("read %d records, want %d", r, MaxListScan)
	}
	list, next, err = s.ListPage(context.Background(), "ns", ListOptions{Name: "rare", Before: next})
	if err != nil || len(list) != 1 || list[0].ActivationID != ids[0] || next != "" {
		t.Fatalf("second page: %v, next %q, %v", list, next, err)
	}
	// List stops at the bound too.
	l, err := s.List(context.Background(), "ns", ListOptions{Name: "rare"})
	if err != nil || len(l) != 0 {
		t.Fatalf("List: %d activations, %v; want none (it reads %d records at most)", len(l), err, MaxListScan)
	}
}
