package registry

import "time"

// SetFollowClock makes r's follow read its time from now (tests only).
func SetFollowClock(r *Registry, now func() time.Time) {
	r.follow.SetClock(now)
}
