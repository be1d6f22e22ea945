package sandbox

import (
	"context"
	"log/slog"
	"time"
)

// hold counts one more holder of a compiled module.
func (e *Engine) hold(ent *cacheEntry) {
	e.mu.Lock()
	ent.refs++
	e.mu.Unlock()
}

// Release gives back a Module that Compile returned: the caller no longer
// runs it (its reactor pools are closed). Once every holder of the compiled
// code has released it, the code stays cached for Config.IdleModules, so
// that a new load of the same code does not compile again, and is then
// freed. Release each Module once; releasing one whose code was already
// evicted does nothing.
func (m *Module) Release() {
	e := m.engine
	if e == nil {
		return
	}
	e.mu.Lock()
	ent := e.modules[cacheKey{codeHash: m.codeHash, pages: m.limits.MemoryPages}]
	if ent == nil || ent.mod == nil || ent.mod.compiled != m.compiled || ent.refs == 0 {
		e.mu.Unlock()
		return
	}
	ent.refs--
	idle := ent.refs == 0
	if idle {
		ent.idleSince = time.Now()
	}
	e.mu.Unlock()
	if idle {
		m.freeSpares() // nothing runs the module now
	}
}

// sweep frees the compiled modules left unheld for e.idle, until the
// engine closes.
func (e *Engine) sweep() {
	t := time.NewTicker(min(e.idle/2, time.Minute))
	defer t.Stop()
	for {
		select {
		case <-e.stopSweep:
			return
		case <-t.C:
		}
		e.evictIdle(time.Now())
	}
}

// evictIdle frees the compiled modules unheld since before now - e.idle.
func (e *Engine) evictIdle(now time.Time) {
	var free []*cacheEntry
	e.mu.Lock()
	for key, ent := range e.modules {
		select {
		case <-ent.done:
		default:
			continue // still compiling
		}
		if ent.err == nil && ent.refs == 0 && !ent.idleSince.IsZero() && now.Sub(ent.idleSince) >= e.idle {
			delete(e.modules, key)
			free = append(free, ent)
		}
	}
	e.mu.Unlock()
	for _, ent := range free {
		e.evictions.Add(1)
		e.log.LogAttrs(context.Background(), slog.LevelDebug, "compiled module freed", slog.String("code_hash", ent.mod.codeHash))
		ent.mod.freeSpares()
		_ = ent.mod.compiled.Close(context.Background()) // wazero's CompiledModule.Close always returns nil
	}
}
