package gateway

import (
	"net/http/httptest"
	"slices"
	"strconv"
	"testing"

	"github.com/cloister-faas/cloister/internal/apierr"
)

func TestQueryVersion(t *testing.T) {
	for _, c := range []struct {
		query string
		want  int
		code  apierr.Code
	}{
		{"", 0, ""},
		{"?version=", 0, ""},
		{"?version=latest", 0, ""},
		{"?version=1", 1, ""},
		{"?version=2147483647", MaxVersion, ""},
		{"?version=0", 0, apierr.BadRequest},
		{"?version=-1", 0, apierr.BadRequest},
		{"?version=+1", 0, apierr.BadRequest},
		{"?version=1.0", 0, apierr.BadRequest},
		{"?version=2147483648", 0, apierr.BadRequest},
		{"?version=99999999999999999999", 0, apierr.BadRequest},
		{"?version=LATEST", 0, apierr.BadRequest},
	} {
		v, err := queryVersion(httptest.NewRequest("GET", "/v1/functions/f"+c.query, nil))
		if v != c.want || apierr.CodeOf(err) != c.code {
			t.Errorf("%q: got %d, %v; want %d, %q", c.query, v, err, c.want, c.code)
		}
	}
}

func TestSealedVersion(t *testing.T) {
	for _, c := range []struct {
		query, sealed, want int
		code                apierr.Code
	}{
		{0, 0, 0, ""},
		{3, 0, 3, ""},
		{0, 3, 3, ""},
		{3, 3, 3, ""},
		{0, MaxVersion, MaxVersion, ""},
		{2, 3, 0, apierr.BadRequest},
		{0, -1, 0, apierr.BadRequest},
		{3, -1, 0, apierr.BadRequest},
		{0, MaxVersion + 1, 0, apierr.BadRequest},
	} {
		v, err := sealedVersion(c.query, c.sealed)
		if v != c.want || apierr.CodeOf(err) != c.code {
			t.Errorf("query %d, sealed %d: got %d, %v; want %d, %q", c.query, c.sealed, v, err, c.want, c.code)
		}
	}
}

func TestOWQueryBool(t *testing.T) {
	for _, c := range []struct {
		query   string
		def, ok bool
		want    bool
	}{
		{"", false, true, false},
		{"", true, true, true},
		{"?k=", true, true, true},
		{"?k=true", false, true, true},
		{"?k=false", true, true, false},
		{"?k=maybe", true, false, false},
		{"?k=1", false, false, false},
		{"?k=0", true, false, false},
		{"?k=TRUE", false, false, false},
		{"?k=yes", false, false, false},
		{"?k=t", false, false, false},
	} {
		got, err := owQueryBool(httptest.NewRequest("GET", "/x"+c.query, nil), "k", c.def)
		if (err == nil) != c.ok || got != c.want || (err != nil && apierr.CodeOf(err) != apierr.BadRequest) {
			t.Errorf("%q (default %v): got %v, %v; want %v, ok %v", c.query, c.def, got, err, c.want, c.ok)
		}
	}
}

func TestOWListPage(t *testing.T) {
	list := make([]int, 250)
	for i := range list {
		list[i] = i
	}
	for _, c := range []struct {
		query       string
		first, size int
		count       bool
		ok          bool
	}{
		{"", 0, owDefaultLimit, false, true},
		{"?limit=5", 0, 5, false, true},
		{"?limit=0", 0, owMaxLimit, false, true},
		{"?limit=200&skip=10", 10, 200, false, true},
		{"?skip=240", 240, 10, false, true},
		{"?skip=250", 0, 0, false, true},
		{"?skip=9999999", 0, 0, false, true},
		{"?count=true", 0, owDefaultLimit, true, true},
		{"?limit=201", 0, 0, false, false},
		{"?limit=-1", 0, 0, false, false},
		{"?limit=x", 0, 0, false, false},
		{"?skip=-1", 0, 0, false, false},
		{"?skip=1e3", 0, 0, false, false},
		{"?count=1", 0, 0, false, false},
	} {
		pg, err := owListPage(httptest.NewRequest("GET", "/x"+c.query, nil), "actions")
		if (err == nil) != c.ok {
			t.Errorf("%q: got %v, want ok %v", c.query, err, c.ok)
			continue
		}
		if err != nil {
			if apierr.CodeOf(err) != apierr.BadRequest {
				t.Errorf("%q: got %v, want bad_request", c.query, err)
			}
			continue
		}
		page := owPageOf(list, pg)
		want := list[min(c.first, len(list)):min(c.first+c.size, len(list))]
		if pg.count != c.count || !slices.Equal(page, want) {
			t.Errorf("%q: got a page of %d from %s (count %v), want %d from %d (count %v)", c.query, len(page), first(page), pg.count, len(want), c.first, c.count)
		}
	}
}

func first(l []int) string {
	if len(l) == 0 {
		return "-"
	}
	return strconv.Itoa(l[0])
}
