package certs

import (
	"bytes"
	"crypto/ed25519"
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
// Certificates are found by their signature, and a hit compares the body
// and the coordinator key byte for byte: a lookup neither hashes nor copies
// the certificate (the cache is on the path of every call,
// docs/architecture.md).
type WorkerCache struct {
	mu sync.RWMutex
	m  map[string]*openedWorker // by signature
}

// openedWorker is a certificate that opened, with what it opened under.
type openedWorker struct {
	body, coordinator []byte
	w                 *Worker
}

// Open is OpenWorker through the cache. The returned Worker is shared:
// callers must not modify it.
func (c *WorkerCache) Open(s Signed, coordinator ed25519.PublicKey) (*Worker, error) {
	c.mu.RLock()
	e := c.m[string(s.Signature)]
	c.mu.RUnlock()
	if e != nil && bytes.Equal(e.body, s.Body) && bytes.Equal(e.coordinator, coordinator) {
		return e.w, nil
	}
	w, err := OpenWorker(s, coordinator)
	if err != nil {
		return nil, err
	}
	e = &openedWorker{body: bytes.Clone(s.Body), coordinator: bytes.Clone(coordinator), w: w}
	c.mu.Lock()
	if c.m == nil || len(c.m) >= maxCached {
		c.m = make(map[string]*openedWorker)
	}
	c.m[string(s.Signature)] = e
	c.mu.Unlock()
	return w, nil
}
