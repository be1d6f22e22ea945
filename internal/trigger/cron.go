package trigger

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Schedule is a parsed cron schedule. Times are in UTC.
//
// Accepted forms:
//   - five fields, "minute hour day-of-month month day-of-week" (the
//     standard crontab form), firing at second 0;
//   - six fields, with seconds first ("*/10 * * * * *");
//   - @yearly (@annually), @monthly, @weekly, @daily (@midnight), @hourly;
//   - "@every D", a Go duration of at least one second, firing at the
//     multiples of D since the Unix epoch.
//
// A field is "*", a value, a range "a-b", a list "a,b-c", or any of these
// with a step "/n" ("*/15", "0-30/10"). Day-of-week runs 0-6 from Sunday (7
// is Sunday too). When both day fields are restricted, a day matches
// either, as in crontab.
type Schedule struct {
	expr                          string
	every                         time.Duration
	sec, min, hour, dom, mon, dow uint64
	domAny, dowAny                bool
}

// String returns the expression the schedule was parsed from.
func (s *Schedule) String() string { return s.expr }

var macros = map[string]string{
	"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
	"@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *",
}

// ParseCron parses a cron expression; errors say which field is wrong.
func ParseCron(expr string) (*Schedule, error) {
	e := strings.TrimSpace(expr)
	if len(e) > 256 {
		return nil, fmt.Errorf("cron expression over 256 characters")
	}
	s := &Schedule{expr: e}
	if d, ok := strings.CutPrefix(e, "@every "); ok {
		every, err := time.ParseDuration(strings.TrimSpace(d))
		if err != nil || every < time.Second {
			return nil, fmt.Errorf("@every needs a duration of at least 1s, like \"@every 5m\"")
		}
		s.every = every
		return s, nil
	}
	if m, ok := macros[e]; ok {
		e = m
	} else if strings.HasPrefix(e, "@") {
		return nil, fmt.Errorf("unknown macro %q (use @yearly, @monthly, @weekly, @daily, @hourly or @every D)", e)
	}
	f := strings.Fields(e)
	switch len(f) {
	case 5:
		f = append([]string{"0"}, f...)
	case 6:
	default:
		return nil, fmt.Errorf("want 5 fields (minute hour day month weekday) or 6 (with seconds first), got %d", len(f))
	}
	specs := []struct {
		name     string
		lo, hi   int
		dst      *uint64
		wildcard *bool
	}{
		{"second", 0, 59, &s.sec, nil}, {"minute", 0, 59, &s.min, nil}, {"hour", 0, 23, &s.hour, nil},
		{"day-of-month", 1, 31, &s.dom, &s.domAny}, {"month", 1, 12, &s.mon, nil}, {"day-of-week", 0, 7, &s.dow, &s.dowAny},
	}
	for i, sp := range specs {
		bits, err := parseField(f[i], sp.lo, sp.hi)
		if err != nil {
			return nil, fmt.Errorf("%s field %q: %v", sp.name, f[i], err)
		}
		*sp.dst = bits
		if sp.wildcard != nil {
			*sp.wildcard = strings.HasPrefix(f[i], "*")
		}
	}
	if s.dow&(1<<7) != 0 {
		s.dow |= 1
	}
	return s, nil
}

func parseField(f string, lo, hi int) (uint64, error) {
	var bits uint64
	for _, item := range strings.Split(f, ",") {
		rng, stepStr, hasStep := strings.Cut(item, "/")
		step := 1
		if hasStep {
			n, err := strconv.Atoi(stepStr)
			if err != nil || n < 1 || n > hi {
				return 0, fmt.Errorf("bad step %q", stepStr)
			}
			step = n
		}
		a, b := lo, hi
		switch {
		case rng == "*":
		case strings.Contains(rng, "-"):
			x, y, _ := strings.Cut(rng, "-")
			var err1, err2 error
			a, err1 = strconv.Atoi(x)
			b, err2 = strconv.Atoi(y)
			if err1 != nil || err2 != nil || a > b {
				return 0, fmt.Errorf("bad range %q", rng)
			}
		default:
			n, err := strconv.Atoi(rng)
			if err != nil {
				return 0, fmt.Errorf("bad value %q", rng)
			}
			a = n
			if !hasStep {
				b = n
			}
		}
		if a < lo || b > hi {
			return 0, fmt.Errorf("%d-%d is outside %d-%d", a, b, lo, hi)
		}
		for v := a; v <= b; v += step {
			bits |= 1 << uint(v)
		}
	}
	return bits, nil
}

func has(bits uint64, v int) bool { return bits&(1<<uint(v)) != 0 }

// Next returns the first time after t (strictly) that the schedule fires,
// or the zero time if there is none within five years (e.g. February 30).
func (s *Schedule) Next(t time.Time) time.Time {
	t = t.UTC()
	if s.every > 0 {
		return t.Truncate(s.every).Add(s.every)
	}
	t = t.Truncate(time.Second).Add(time.Second)
	limit := t.AddDate(5, 0, 0)
	for t.Before(limit) {
		if !has(s.mon, int(t.Month())) {
			t = time.Date(t.Year(), t.Month()+1, 1, 0, 0, 0, 0, time.UTC)
			continue
		}
		if !s.dayMatches(t) {
			t = time.Date(t.Year(), t.Month(), t.Day()+1, 0, 0, 0, 0, time.UTC)
			continue
		}
		if !has(s.hour, t.Hour()) {
			t = t.Truncate(time.Hour).Add(time.Hour)
			continue
		}
		if !has(s.min, t.Minute()) {
			t = t.Truncate(time.Minute).Add(time.Minute)
			continue
		}
		if !has(s.sec, t.Second()) {
			t = t.Add(time.Second)
			continue
		}
		return t
	}
	return time.Time{}
}

func (s *Schedule) dayMatches(t time.Time) bool {
	dom, dow := has(s.dom, t.Day()), has(s.dow, int(t.Weekday()))
	switch {
	case s.domAny && s.dowAny:
		return true
	case s.domAny:
		return dow
	case s.dowAny:
		return dom
	default:
		return dom || dow
	}
}
