package certs

import (
	"crypto/ed25519"
	"encoding/binary"
	"sync"
)

// maxCached bounds a WorkerCache; past it the cache starts afresh. Workers
// renew their certificates hourly, so a cache holds a handful in practice.
const maxCached = 4096

// WorkerCache opens worker certificates once: the Ed25519 check and the
// JSON decoding are the cost of opening a certificate that every request
// and receipt names. A hit requires the same body, signature and
// coordinator key as a certificate that opened before, so it gives what
// OpenWorker would. Expiry is not part of opening: callers check
// Worker.ValidAt as they would after OpenWorker. It is safe for concurrent
// use; the zero value is ready.
//
// The key is the three byte strings themselves, length-prefixed: a map
// lookup hashes them faster than SHA-256 would (the cache was a measurable
// part of every call, docs/architecture.md), and an exact key cannot
// collide.
type WorkerCache struct {
	mu sync.RWMutex
	m  map[string]*Worker
}

// Open is OpenWorker through the cache. The returned Worker is shared:
// callers must not modify it.
func (c *WorkerCache) Open(s Signed, coordinator ed25519.PublicKey) (*Worker, error) {
	var buf [1024]byte // most keys fit: no allocation for a lookup
	k := buf[:0]
	for _, part := range [][]byte{coordinator, s.Signature, s.Body} {
		k = binary.BigEndian.AppendUint64(k, uint64(len(part)))
		k = append(k, part...)
	}
	c.mu.RLock()
	w, ok := c.m[string(k)]
	c.mu.RUnlock()
	if ok {
		return w, nil
	}
	w, err := OpenWorker(s, coordinator)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if c.m == nil || len(c.m) >= maxCached {
		c.m = make(map[string]*Worker)
	}
	c.m[string(k)] = w
	c.mu.Unlock()
	return w, nil
}
