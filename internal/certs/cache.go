package certs

import (
	"crypto/ed25519"
	"crypto/sha256"
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
type WorkerCache struct {
	mu sync.RWMutex
	m  map[[sha256.Size]byte]*Worker
}

// Open is OpenWorker through the cache. The returned Worker is shared:
// callers must not modify it.
func (c *WorkerCache) Open(s Signed, coordinator ed25519.PublicKey) (*Worker, error) {
	h := sha256.New()
	for _, part := range [][]byte{coordinator, s.Signature, s.Body} {
		h.Write(binary.BigEndian.AppendUint64(nil, uint64(len(part))))
		h.Write(part)
	}
	var k [sha256.Size]byte
	h.Sum(k[:0])
	c.mu.RLock()
	w, ok := c.m[k]
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
		c.m = make(map[[sha256.Size]byte]*Worker)
	}
	c.m[k] = w
	c.mu.Unlock()
	return w, nil
}
