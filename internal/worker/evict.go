package worker

import (
	"context"
	"slices"
	"strings"
	"time"
)

// Defaults of Config.MaxLoaded and Config.LoadedIdle.
const (
	DefaultMaxLoaded  = 256
	DefaultLoadedIdle = 10 * time.Minute
)

// evict drops a loaded version if it is still the one under id, and closes
// its pool. Calls in flight keep the sandbox they hold until they return;
// the next call loads the version again.
func (w *Worker) evict(id string, l *loaded, why string) {
	if !w.fns.CompareAndDelete(id, l) {
		return
	}
	w.nLoaded.Add(-1)
	l.close()
	w.log.Info("unloaded function", "function", id, "reason", why)
}

// evictFunction drops every loaded version of ns/name (it was deleted).
func (w *Worker) evictFunction(ns, name string) {
	prefix := ns + "/" + name + "/"
	w.fns.Range(func(k, v any) bool {
		if id := k.(string); strings.HasPrefix(id, prefix) {
			w.evict(id, v.(*loaded), "deleted")
		}
		return true
	})
}

// evictLRU drops the least recently used versions without calls running
// until at most MaxLoaded are loaded.
func (w *Worker) evictLRU() {
	type entry struct {
		id   string
		l    *loaded
		used int64
	}
	var all []entry
	w.fns.Range(func(k, v any) bool {
		l := v.(*loaded)
		all = append(all, entry{k.(string), l, l.lastUsed.Load()})
		return true
	})
	over := len(all) - w.cfg.MaxLoaded
	if over <= 0 {
		return
	}
	slices.SortFunc(all, func(a, b entry) int { return int(min(max(a.used-b.used, -1), 1)) })
	// Versions with calls running stay: there are at most as many of
	// those as slots.
	for _, e := range all {
		if over == 0 {
			break
		}
		if len(e.l.sem) == 0 {
			w.evict(e.id, e.l, "least recently used")
			over--
		}
	}
}

// sweepLoaded drops versions that went uncalled for LoadedIdle, until ctx
// ends.
func (w *Worker) sweepLoaded(ctx context.Context) {
	every := min(w.cfg.LoadedIdle/2, time.Minute)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cutoff := w.now().Add(-w.cfg.LoadedIdle).UnixNano()
		w.fns.Range(func(k, v any) bool {
			if l := v.(*loaded); l.lastUsed.Load() < cutoff && len(l.sem) == 0 {
				w.evict(k.(string), l, "idle")
			}
			return true
		})
	}
}
