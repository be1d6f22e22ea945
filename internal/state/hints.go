package state

// hint is what a handle last saw of a key: the bucket revision and the
// version of its newest value. A stale hint costs a retry, never safety:
// the bucket refuses a store that does not follow the named revision, and
// the anchor refuses a commit that is not newer than the current one.
type hint struct{ rev, version uint64 }

// notOnTop marks a read whose committed revision is not the newest.
const notOnTop = ^uint64(0)

// maxHints bounds the keys whose names and hints a handle keeps.
const maxHints = 2 * DefaultMaxKeys

// keyInfo is what a handle keeps of a key: its name in the bucket (an HMAC,
// computed once) and its hint, if any.
type keyInfo struct {
	name   string
	h      hint
	hinted bool
}

// lookupKey returns key's name in the bucket and its hint, if any.
func (f *Function) lookupKey(key []byte) (string, hint, bool) {
	f.knownMu.Lock()
	if ki, ok := f.known[string(key)]; ok {
		name, h, hinted := ki.name, ki.h, ki.hinted
		f.knownMu.Unlock()
		return name, h, hinted
	}
	f.knownMu.Unlock()
	name := f.k.storeKey(f.ns, f.name, key)
	f.knownMu.Lock()
	defer f.knownMu.Unlock()
	if ki, ok := f.known[string(key)]; ok {
		return ki.name, ki.h, ki.hinted
	}
	f.keepLocked(key, &keyInfo{name: name})
	return name, hint{}, false
}

// keepLocked adds ki as key's. f.knownMu is held.
func (f *Function) keepLocked(key []byte, ki *keyInfo) {
	if f.known == nil || len(f.known) >= maxHints {
		f.known = map[string]*keyInfo{}
	}
	f.known[string(key)] = ki
}

// remember records what the handle saw of key, unless it already knows of
// a newer version: a read that learned of an older commit and finishes
// after a newer one must not send the next write after a superseded
// revision (a wasted round trip to the bucket and the anchor).
func (f *Function) remember(key []byte, rev, version uint64) {
	f.knownMu.Lock()
	defer f.knownMu.Unlock()
	ki, ok := f.known[string(key)]
	if !ok {
		ki = &keyInfo{name: f.k.storeKey(f.ns, f.name, key)}
		f.keepLocked(key, ki)
	}
	if ki.hinted && ki.h.version > version {
		return
	}
	ki.h, ki.hinted = hint{rev, version}, true
}

// forget drops key's hint.
func (f *Function) forget(key []byte) {
	f.knownMu.Lock()
	defer f.knownMu.Unlock()
	if ki, ok := f.known[string(key)]; ok {
		ki.hinted = false
	}
}
