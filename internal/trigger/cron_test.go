package trigger

import (
	"testing"
	"time"
)

func TestCronNext(t *testing.T) {
	at := func(s string) time.Time {
		tm, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return tm
	}
	for _, c := range []struct{ expr, from, want string }{
		{"* * * * *", "2026-11-23T10:15:30Z", "2026-11-23T10:16:00Z"},
		{"*/15 * * * *", "2026-11-23T10:15:00Z", "2026-11-23T10:30:00Z"},
		{"0 9 * * 1-5", "2026-11-21T10:00:00Z", "2026-11-23T09:00:00Z"}, // Saturday → Monday
		{"30 2 1 * *", "2026-11-23T10:00:00Z", "2026-12-01T02:30:00Z"},
		{"0 0 29 2 *", "2026-03-01T00:00:00Z", "2028-02-29T00:00:00Z"},
		{"0 0 1 1 *", "2026-12-31T23:59:59Z", "2027-01-01T00:00:00Z"},
		{"*/10 * * * * *", "2026-11-23T10:15:31Z", "2026-11-23T10:15:40Z"},
		{"0 0 13 * 5", "2026-11-23T00:00:00Z", "2026-11-27T00:00:00Z"}, // day 13 OR Friday
		{"0 12 * * 7", "2026-11-23T00:00:00Z", "2026-11-29T12:00:00Z"}, // 7 is Sunday
		{"5,10-12/2 * * * *", "2026-11-23T10:05:00Z", "2026-11-23T10:10:00Z"},
		{"@hourly", "2026-11-23T10:15:00Z", "2026-11-23T11:00:00Z"},
		{"@every 5m", "2026-11-23T10:16:00Z", "2026-11-23T10:20:00Z"},
	} {
		s, err := ParseCron(c.expr)
		if err != nil {
			t.Errorf("%q: %v", c.expr, err)
			continue
		}
		if got := s.Next(at(c.from)); !got.Equal(at(c.want)) {
			t.Errorf("%q after %s: got %s, want %s", c.expr, c.from, got.Format(time.RFC3339), c.want)
		}
	}
}

func TestCronNeverFires(t *testing.T) {
	s, err := ParseCron("0 0 30 2 *")
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Next(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)); !got.IsZero() {
		t.Fatalf("February 30 fired at %s", got)
	}
}

func TestCronRejects(t *testing.T) {
	for _, e := range []string{"", "* * * *", "* * * * * * *", "60 * * * *", "* 24 * * *", "* * 0 * *", "* * * 13 *",
		"* * * * 8", "*/0 * * * *", "5-1 * * * *", "a * * * *", "1-x * * * *", "@every", "@every 999ms", "@every x", "@never"} {
		if _, err := ParseCron(e); err == nil {
			t.Errorf("%q parsed", e)
		}
	}
}

func FuzzParseCron(f *testing.F) {
	for _, s := range []string{"* * * * *", "*/5 1-3 * * 1,3", "@every 1h", "0 0 1 1 *"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, expr string) {
		s, err := ParseCron(expr)
		if err != nil {
			return
		}
		from := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
		if n := s.Next(from); !n.IsZero() && !n.After(from) {
			t.Fatalf("%q: next %s is not after %s", expr, n, from)
		}
	})
}
