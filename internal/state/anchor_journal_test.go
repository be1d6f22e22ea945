package state

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cloister-faas/cloister/internal/bus"
	"github.com/cloister-faas/cloister/internal/bus/bustest"
	"github.com/cloister-faas/cloister/internal/journal"
)

// deployment is an embedded NATS server whose journal the anchors of its
// coordinators share, and the master secret they share.
type deployment struct {
	js     jetstream.JetStream
	kv     jetstream.KeyValue // the state bucket
	master []byte
}

func newDeployment(t testing.TB) *deployment {
	t.Helper()
	st, err := bus.OpenStores(context.Background(), bustest.Connect(t), 1, quiet())
	if err != nil {
		t.Fatal(err)
	}
	d := &deployment{js: st.JS, kv: st.State, master: make([]byte, 32)}
	rand.Read(d.master)
	return d
}

// open opens an anchor on the deployment's journal, without read leases
// unless mod sets them; it closes with the test.
func (d *deployment) open(t testing.TB, standby bool, mod ...func(*AnchorConfig)) *Anchor {
	t.Helper()
	cfg := AnchorConfig{JS: d.js, Standby: standby, Master: d.master, Lease: -1, Logger: quiet()}
	for _, m := range mod {
		m(&cfg)
	}
	a, err := OpenAnchor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

// records is how many records the deployment's journal holds.
func (d *deployment) records(t *testing.T) uint64 {
	t.Helper()
	s, err := d.js.Stream(context.Background(), bus.StreamAnchorJournal)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

// client sends batches straight to an anchor, sealed under the state key
// of ns/fn, as a worker's store does.
type client struct{ k *keys }

func newClient(t testing.TB, master []byte) client {
	t.Helper()
	sk, err := DeriveKey(master, "ns", "fn")
	if err != nil {
		t.Fatal(err)
	}
	k, err := newKeys(sk)
	if err != nil {
		t.Fatal(err)
	}
	return client{k}
}

func (c client) call(a *Anchor, ops ...op) ([]result, error) {
	pt, err := appendOps(nil, ops)
	if err != nil {
		return nil, err
	}
	nonce, sealed := c.k.sealMessage(requestAAD("ns", "fn"), pt)
	rep, err := a.Handle(&AnchorRequest{Namespace: "ns", Name: "fn", Nonce: nonce, Sealed: sealed})
	if err != nil {
		return nil, err
	}
	if pt, err = c.k.openMessage(replyAAD("ns", "fn", nonce), rep.Nonce, rep.Sealed); err != nil {
		return nil, err
	}
	return decodeResults(pt)
}

var testDigest = sha256.Sum256([]byte("envelope"))

func putOp(key string, v uint64) op {
	return op{Kind: opPut, Key: []byte(key), Version: v, Rev: v, Digest: testDigest[:], Size: 10}
}

// put commits version v of key; anything but a success is an error.
func (c client) put(a *Anchor, key string, v uint64) error {
	res, err := c.call(a, putOp(key, v))
	if err != nil {
		return err
	}
	if res[0].Status != stOK {
		return fmt.Errorf("put %s v%d: %s %s", key, v, res[0].Status, res[0].Msg)
	}
	return nil
}

func (c client) mustPut(t *testing.T, a *Anchor, key string, v uint64) {
	t.Helper()
	if err := c.put(a, key, v); err != nil {
		t.Fatal(err)
	}
}

// version is key's current version at a (0: none).
func (c client) version(t *testing.T, a *Anchor, key string) uint64 {
	t.Helper()
	res, err := c.call(a, op{Kind: opGet, Key: []byte(key)})
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Entry == nil {
		return 0
	}
	return res[0].Entry.Version
}

// snapshot copies a's index: what its log rebuilds (no leases).
type snapshot map[string]struct {
	Entries map[string]entry
	Live    int
	Bytes   int64
}

func indexOf(a *Anchor) snapshot {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := snapshot{}
	for id, x := range a.fns {
		if len(x.entries) == 0 {
			continue // an index a request created without changing it
		}
		v := s[id]
		v.Entries = map[string]entry{}
		for k, e := range x.entries {
			v.Entries[k] = *e
		}
		v.Live, v.Bytes = x.live, x.bytes
		s[id] = v
	}
	return s
}

func sameIndex(t *testing.T, got, want *Anchor) {
	t.Helper()
	if g, w := indexOf(got), indexOf(want); !reflect.DeepEqual(g, w) {
		t.Fatalf("indexes differ:\n%+v\nwant\n%+v", g, w)
	}
}

// following opens a fresh standby, which reads the whole journal: what
// the journal holds.
func (d *deployment) following(t *testing.T) *Anchor {
	t.Helper()
	return d.open(t, true)
}

func TestStandbyFollows(t *testing.T) {
	d := newDeployment(t)
	c := newClient(t, d.master)
	leader := d.open(t, false)
	standby := d.open(t, true)
	for i := range 10 {
		c.mustPut(t, leader, "k"+strconv.Itoa(i), 1)
	}
	c.mustPut(t, leader, "k1", 2)
	res, err := c.call(leader, op{Kind: opDel, Key: []byte("k2"), Version: 3, Rev: 3, Digest: testDigest[:]})
	if err != nil || res[0].Status != stOK {
		t.Fatalf("delete: %+v, %v", res, err)
	}
	// A standby serves nothing.
	if _, err := c.call(standby, op{Kind: opGet, Key: []byte("k1")}); !errors.Is(err, ErrNotLeading) || !errors.Is(err, ErrUnavailable) {
		t.Fatalf("a standby's answer: %v, want ErrNotLeading", err)
	}
	if err := standby.CatchUp(context.Background()); err != nil {
		t.Fatal(err)
	}
	sameIndex(t, standby, leader)
	// On a leader, CatchUp does nothing.
	if err := leader.CatchUp(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestLeadContinues: after the active anchor stops, a standby that did not
// read its last records leads, with every acknowledged write, and the
// versions go on from there.
func TestLeadContinues(t *testing.T) {
	ctx := context.Background()
	d := newDeployment(t)
	c := newClient(t, d.master)
	old := d.open(t, false)
	standby := d.open(t, true)
	c.mustPut(t, old, "a", 1)
	if err := standby.CatchUp(ctx); err != nil {
		t.Fatal(err)
	}
	c.mustPut(t, old, "a", 2) // after the standby's last catch-up
	c.mustPut(t, old, "b", 1)
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}
	if err := standby.Lead(ctx); err != nil {
		t.Fatal(err)
	}
	sameIndex(t, standby, old)
	if v := c.version(t, standby, "a"); v != 2 {
		t.Fatalf("a is at version %d after the takeover, want 2", v)
	}
	// A write the old anchor had superseded is refused; the next goes in.
	if res, err := c.call(standby, putOp("a", 2)); err != nil || res[0].Status != stConflict {
		t.Fatalf("a stale put after the takeover: %+v, %v", res, err)
	}
	c.mustPut(t, standby, "a", 3)
	// The journal holds both coordinators' records, in one chain.
	sameIndex(t, d.following(t), standby)
	if err := standby.Lead(ctx); err != nil {
		t.Fatalf("Lead on a leader: %v", err)
	}
}

// switchTransport reaches whichever anchor is active, as the bus does.
type switchTransport struct{ a atomic.Pointer[Anchor] }

func (s *switchTransport) Exchange(ctx context.Context, req *AnchorRequest) (*AnchorReply, error) {
	return s.a.Load().Handle(req)
}

// TestTakeoverThroughStore: a worker's store goes on across a takeover:
// what it wrote reads back, and it writes on.
func TestTakeoverThroughStore(t *testing.T) {
	ctx := context.Background()
	d := newDeployment(t)
	old := d.open(t, false)
	standby := d.open(t, true)
	tr := &switchTransport{}
	tr.a.Store(old)
	s, err := NewStore(Options{KV: d.kv, Anchor: tr, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	k, _ := DeriveKey(d.master, "ns", "fn")
	f, _ := s.Function("ns", "fn", k)
	for i := range 5 {
		mustPut(t, f, "k"+strconv.Itoa(i), "old "+strconv.Itoa(i))
	}
	mustPut(t, f, "k0", "old, rewritten")
	if _, err := f.Delete(ctx, []byte("k1")); err != nil {
		t.Fatal(err)
	}
	old.Close()
	if err := standby.Lead(ctx); err != nil {
		t.Fatal(err)
	}
	tr.a.Store(standby)
	wantValue(t, f, "k0", "old, rewritten")
	if _, ok, err := f.Get(ctx, []byte("k1")); ok || err != nil {
		t.Fatalf("deleted k1 after the takeover: %v, %v", ok, err)
	}
	mustPut(t, f, "k0", "new")
	wantValue(t, f, "k0", "new")
	keys, _, err := f.List(ctx, nil, nil, 0)
	if err != nil || len(keys) != 4 {
		t.Fatalf("keys after the takeover: %q, %v", keys, err)
	}
}

// fakeClock is a clock the test moves.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// leasedPair opens a leading anchor and a standby on one journal, with 1 s
// read leases on a fake clock, and writes k = 1 through the leader.
func leasedPair(t *testing.T) (client, *fakeClock, *Anchor, *Anchor) {
	t.Helper()
	d := newDeployment(t)
	c := newClient(t, d.master)
	clock := &fakeClock{t: time.Unix(1_000_000, 0)}
	leases := func(cfg *AnchorConfig) { cfg.Lease, cfg.Now = time.Second, clock.now }
	old := d.open(t, false, leases)
	standby := d.open(t, true, leases)
	clock.advance(2 * time.Second) // past old's own start
	c.mustPut(t, old, "k", 1)
	return c, clock, old, standby
}

// TestLeadHonoursLeases: a read lease the previous active granted is not
// broken by a write the new one commits: after Lead, another holder's
// writes wait one lease length.
func TestLeadHonoursLeases(t *testing.T) {
	ctx := context.Background()
	c, clock, old, standby := leasedPair(t)
	res, err := c.call(old, op{Kind: opLease, Holder: "reader"})
	if err != nil || res[0].LeaseMS != 1000 {
		t.Fatalf("lease: %+v, %v", res, err)
	}
	// The old active stops at once; its lease runs for another second.
	old.Close()
	if err := standby.Lead(ctx); err != nil {
		t.Fatal(err)
	}
	w := putOp("k", 2)
	w.Holder = "writer"
	res, err = c.call(standby, w)
	if err != nil || res[0].Status != stRetry || res[0].RetryMS != 1000 {
		t.Fatalf("a write right after the takeover: %+v, %v; want retry in 1000 ms", res, err)
	}
	clock.advance(time.Second)
	if res, err = c.call(standby, w); err != nil || res[0].Status != stOK {
		t.Fatalf("a write a lease length after the takeover: %+v, %v", res, err)
	}
}

// TestLeadAfterLeases: a coordinator that took over a lease abandoned long
// enough that none of the previous leader's read leases runs writes at
// once.
func TestLeadAfterLeases(t *testing.T) {
	ctx := context.Background()
	c, _, old, standby := leasedPair(t)
	old.Close()
	if err := standby.LeadAfterLeases(ctx); err != nil {
		t.Fatal(err)
	}
	w := putOp("k", 2)
	w.Holder = "writer"
	if res, err := c.call(standby, w); err != nil || res[0].Status != stOK {
		t.Fatalf("a write right after the takeover: %+v, %v; want ok", res, err)
	}
}

// TestStaleLeaderFenced: an active anchor that did not notice a standby
// took over cannot write behind its back; it stops for good and says so.
func TestStaleLeaderFenced(t *testing.T) {
	ctx := context.Background()
	d := newDeployment(t)
	c := newClient(t, d.master)
	stale := d.open(t, false)
	c.mustPut(t, stale, "k", 1)
	successor := d.open(t, true)
	if err := successor.Lead(ctx); err != nil {
		t.Fatal(err)
	}
	c.mustPut(t, successor, "k", 2)
	select {
	case <-stale.Fenced():
		t.Fatal("fenced before it wrote")
	default:
	}
	if err := c.put(stale, "other", 1); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("the stale leader's write: %v, want ErrUnavailable", err)
	}
	select {
	case <-stale.Fenced():
	default:
		t.Fatal("the stale leader is not fenced after its write was refused")
	}
	if _, err := c.call(stale, op{Kind: opGet, Key: []byte("k")}); !errors.Is(err, ErrFenced) {
		t.Fatalf("a fenced anchor's answer: %v, want ErrFenced", err)
	}
	if err := stale.Lead(ctx); !errors.Is(err, ErrFenced) {
		t.Fatalf("Lead on a fenced anchor: %v", err)
	}
	// Its write is not in the journal; the successor's is.
	f := d.following(t)
	sameIndex(t, f, successor)
	if v := c.version(t, successor, "other"); v != 0 {
		t.Fatalf("the fenced write is in the journal: version %d", v)
	}
	c.mustPut(t, successor, "k", 3)
}

// writeFileLog writes a file log in dir as earlier versions did: n
// records of one change each, the first as JSON (older still), and
// returns the anchor that replays it.
func writeFileLog(t *testing.T, dir string, master []byte, n int, key func(i int) string) *Anchor {
	t.Helper()
	l, err := openAnchorLog(dir, master, func([]byte) error { return nil }, quiet())
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		ch := []change{{Key: []byte(key(i)), Entry: &entry{Version: uint64(i + 1), Rev: uint64(i + 1), Digest: testDigest[:], Size: i}}}
		var pt []byte
		if i == 0 {
			pt, err = json.Marshal(logRecord{Function: "ns/fn", Changes: ch})
		} else {
			pt, err = appendLogRecord(nil, "ns/fn", ch)
		}
		if err == nil {
			err = l.append(context.Background(), pt)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := l.close(); err != nil {
		t.Fatal(err)
	}
	a, err := OpenAnchor(AnchorConfig{Dir: dir, Master: master, Lease: -1, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

// TestMigrateFileLog: the first anchor to lead with a journal moves the
// file log of an earlier version into it, once; one cut short resumes.
func TestMigrateFileLog(t *testing.T) {
	ctx := context.Background()
	inDir := func(dir string) func(*AnchorConfig) { return func(cfg *AnchorConfig) { cfg.Dir = dir } }
	t.Run("once", func(t *testing.T) {
		d := newDeployment(t)
		dir := t.TempDir()
		file := writeFileLog(t, dir, d.master, 20, func(i int) string { return "k" + strconv.Itoa(i%7) })
		file.Close()
		// A standby moves nothing: only a leader writes the journal.
		standby := d.open(t, true, inDir(dir))
		if n := d.records(t); n != 0 {
			t.Fatalf("a standby wrote %d records", n)
		}
		a := d.open(t, false, inDir(dir))
		sameIndex(t, a, file)
		if _, err := os.Stat(filepath.Join(dir, "anchor.log")); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("anchor.log after the migration: %v", err)
		}
		if _, err := os.Stat(filepath.Join(dir, "anchor.log.migrated")); err != nil {
			t.Fatal(err)
		}
		n := d.records(t)
		if n != 1 {
			t.Fatalf("20 small records migrated into %d journal records, want 1", n)
		}
		c := newClient(t, d.master)
		c.mustPut(t, a, "k0", 100)
		sameIndex(t, d.following(t), a)
		// The standby leads later: the file was moved already.
		a.Close()
		if err := standby.Lead(ctx); err != nil {
			t.Fatal(err)
		}
		sameIndex(t, standby, a)
		if d.records(t) != n+1 {
			t.Fatalf("the journal holds %d records, want %d", d.records(t), n+1)
		}
	})
	// Large keys: the file's 2,400 records (1.3 MB) take two journal
	// records.
	bigKey := func(i int) string { return fmt.Sprintf("%0500d", i) }
	t.Run("resumed", func(t *testing.T) {
		d := newDeployment(t)
		dir := t.TempDir()
		file := writeFileLog(t, dir, d.master, 2400, bigKey)
		file.Close()
		recs, err := readAnchorLog(dir, d.master, quiet())
		if err != nil || len(recs) != 2 {
			t.Fatalf("the file log reads as %d journal records, %v; want 2", len(recs), err)
		}
		// A migration stopped after its first record.
		j, err := journal.Open(ctx, journal.Config{JS: d.js, Stream: bus.StreamAnchorJournal, Subject: bus.SubjectAnchorJournal,
			Key: d.master, Label: journalLabel, Apply: func(uint64, []byte) error { return nil }})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := j.Append(ctx, recs[0]); err != nil {
			t.Fatal(err)
		}
		a := d.open(t, false, inDir(dir))
		sameIndex(t, a, file)
		if n := d.records(t); n != 2 {
			t.Fatalf("the journal holds %d records, want 2", n)
		}
	})
	t.Run("other journal", func(t *testing.T) {
		// The journal went on without this file: it is left alone.
		d := newDeployment(t)
		other := d.open(t, false)
		newClient(t, d.master).mustPut(t, other, "elsewhere", 1)
		other.Close()
		dir := t.TempDir()
		writeFileLog(t, dir, d.master, 3, bigKey).Close()
		a := d.open(t, false, inDir(dir))
		sameIndex(t, a, other)
		if _, err := os.Stat(filepath.Join(dir, "anchor.log")); err != nil {
			t.Fatalf("the file log was moved: %v", err)
		}
	})
}

// faultyJS is JetStream as the anchor's journal sees it, with faults: a
// publish can be held until the test lets it go, and the next ones can
// fail, stored or not.
type faultyJS struct {
	jetstream.JetStream
	// entered receives a value as each publish begins.
	entered chan struct{}
	// hold, while not closed, holds every publish.
	hold chan struct{}

	mu     sync.Mutex
	faults []fault // of the next publishes, in order
	// overtake runs at an overtaken publish.
	overtake func()
	// gone, once closed, ends unanswered publishes.
	gone chan struct{}
}

type fault int

const (
	pass       fault = iota
	lostAck          // stored, but the acknowledgement is lost
	dropped          // not stored
	overtaken        // not stored, and another coordinator writes (overtake)
	unanswered       // not stored, and never answered (a leader that died)
)

func newFaultyJS(js jetstream.JetStream) *faultyJS {
	f := &faultyJS{JetStream: js, entered: make(chan struct{}, 1000), hold: make(chan struct{}), gone: make(chan struct{})}
	close(f.hold)
	return f
}

func (f *faultyJS) Publish(ctx context.Context, subject string, data []byte, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	f.entered <- struct{}{}
	f.mu.Lock()
	hold := f.hold
	fa := pass
	if len(f.faults) > 0 {
		fa, f.faults = f.faults[0], f.faults[1:]
	}
	f.mu.Unlock()
	<-hold
	switch fa {
	case unanswered:
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-f.gone:
			return nil, errors.New("injected: the test ended")
		}
	case overtaken:
		f.overtake()
		fallthrough
	case dropped:
		return nil, errors.New("injected: the publish was lost")
	case lostAck:
		if _, err := f.JetStream.Publish(ctx, subject, data, opts...); err != nil {
			return nil, err
		}
		return nil, errors.New("injected: the acknowledgement was lost")
	}
	return f.JetStream.Publish(ctx, subject, data, opts...)
}

// holdPublishes holds the publishes from now on; the returned function
// (which may be called again) lets them go, the next ones meeting faults
// in order.
func (f *faultyJS) holdPublishes(faults ...fault) (release func()) {
	for len(f.entered) > 0 {
		<-f.entered // publishes that went through before
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	hold := make(chan struct{})
	f.hold, f.faults = hold, faults
	return sync.OnceFunc(func() { close(hold) })
}

// waitQueued waits until the flight queued behind the one in flight has
// n requests waiting for it. (The deadline only turns a bug into a
// failure instead of a hang.)
func waitQueued(t *testing.T, a *Anchor, n int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; {
		if time.Now().After(deadline) {
			t.Fatalf("%d requests never queued", n)
		}
		a.mu.Lock()
		ok := a.inflight != nil && len(a.queue) == 1 && a.queue[0].waiters == n
		a.mu.Unlock()
		if ok {
			return
		}
		runtime.Gosched()
		time.Sleep(time.Millisecond)
	}
}

// TestGroupCommit: requests that arrive while a record is being appended
// share the next one, and none is answered before its record is durable.
func TestGroupCommit(t *testing.T) {
	d := newDeployment(t)
	fj := newFaultyJS(d.js)
	a := d.open(t, false, func(cfg *AnchorConfig) { cfg.JS = fj })
	c := newClient(t, d.master)
	release := fj.holdPublishes()
	defer release() // if the test fails first: Close waits for the append
	var answered atomic.Int32
	errs := make(chan error, 21)
	put := func(key string) {
		err := c.put(a, key, 1)
		answered.Add(1)
		errs <- err
	}
	go put("first")
	<-fj.entered
	const n = 20
	for i := range n {
		go put("k" + strconv.Itoa(i))
	}
	waitQueued(t, a, n)
	if got := answered.Load(); got != 0 {
		t.Fatalf("%d requests answered before their records were stored", got)
	}
	release()
	for range n + 1 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if got := d.records(t); got != 2 {
		t.Fatalf("%d records for 21 requests, want 2: the first's, and one for the 20 that waited", got)
	}
	sameIndex(t, d.following(t), a)
}

// TestGroupCommitFailure: when a record fails, every request queued
// behind it fails too, reads included (they may have seen its changes),
// and the anchor serves again with what the journal holds, whether the
// failed record was stored (its acknowledgement lost) or not.
func TestGroupCommitFailure(t *testing.T) {
	for _, fa := range []fault{lostAck, dropped} {
		t.Run(map[fault]string{lostAck: "lost ack", dropped: "not stored"}[fa], func(t *testing.T) {
			d := newDeployment(t)
			fj := newFaultyJS(d.js)
			a := d.open(t, false, func(cfg *AnchorConfig) { cfg.JS = fj })
			c := newClient(t, d.master)
			c.mustPut(t, a, "before", 1)
			release := fj.holdPublishes(pass, fa)
			defer release()
			first := make(chan error, 1)
			go func() { first <- c.put(a, "a", 1) }()
			<-fj.entered
			// Queued behind it: two writes, one on top of "a", and a
			// read of what they wrote.
			queued := make(chan error, 3)
			go func() { queued <- c.put(a, "b", 1) }()
			go func() { queued <- c.put(a, "a", 2) }()
			waitQueued(t, a, 2)
			go func() {
				res, err := c.call(a, op{Kind: opGet, Key: []byte("b")})
				if err == nil {
					err = fmt.Errorf("a read that saw an unstored write answered: %+v", res[0].Entry)
				}
				queued <- err
			}()
			waitQueued(t, a, 3)
			release()
			if err := <-first; err != nil {
				t.Fatalf("the record before the failed one: %v", err)
			}
			for range 3 {
				if err := <-queued; !errors.Is(err, ErrUnavailable) {
					t.Fatalf("a request queued behind the failed record: %v, want ErrUnavailable", err)
				}
			}
			// It serves again once it has read the journal.
			waitServing(t, c, a, "a")
			want := map[fault]uint64{lostAck: 2, dropped: 1}[fa]
			if v := c.version(t, a, "a"); v != want {
				t.Fatalf("a is at version %d, want %d", v, want)
			}
			sameIndex(t, d.following(t), a)
			c.mustPut(t, a, "a", 3)
			c.mustPut(t, a, "after", 1)
			sameIndex(t, d.following(t), a)
			select {
			case <-a.Fenced():
				t.Fatal("fenced by its own record")
			default:
			}
		})
	}
}

// waitServing waits until a answers c's read of key: it refuses requests
// (ErrUnavailable) until it has read its journal after a failed append.
func waitServing(t *testing.T, c client, a *Anchor, key string) {
	t.Helper()
	for {
		_, err := c.call(a, op{Kind: opGet, Key: []byte(key)})
		if err == nil {
			return
		}
		if !errors.Is(err, ErrUnavailable) {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestAppendUnanswered: an append that gets no answer at all (its stream
// leader died with it) fails after appendTimeout, not never, and the
// anchor serves again once it has read the journal.
func TestAppendUnanswered(t *testing.T) {
	d := newDeployment(t)
	fj := newFaultyJS(d.js)
	a := d.open(t, false, func(cfg *AnchorConfig) { cfg.JS = fj })
	t.Cleanup(func() { close(fj.gone) }) // before the anchor closes
	c := newClient(t, d.master)
	c.mustPut(t, a, "before", 1)
	release := fj.holdPublishes(unanswered)
	release()
	failed := make(chan error, 1)
	go func() { failed <- c.put(a, "a", 1) }()
	select {
	case err := <-failed:
		if !errors.Is(err, ErrUnavailable) {
			t.Fatalf("the unanswered append: %v, want ErrUnavailable", err)
		}
	case <-time.After(10 * appendTimeout):
		t.Fatal("the unanswered append is still waiting")
	}
	waitServing(t, c, a, "before")
	c.mustPut(t, a, "a", 1)
	sameIndex(t, d.following(t), a)
}

// TestSettleFindsOtherWriter: a leader whose append failed reads the
// journal to learn whether it was stored; if it finds another
// coordinator's record there instead, it stops for good.
func TestSettleFindsOtherWriter(t *testing.T) {
	ctx := context.Background()
	d := newDeployment(t)
	fj := newFaultyJS(d.js)
	a := d.open(t, false, func(cfg *AnchorConfig) { cfg.JS = fj })
	successor := d.open(t, true)
	c := newClient(t, d.master)
	c.mustPut(t, a, "k", 1)
	fj.mu.Lock()
	fj.faults = []fault{overtaken}
	fj.overtake = func() {
		if err := successor.Lead(ctx); err != nil {
			t.Error(err)
		}
		if err := c.put(successor, "k", 2); err != nil {
			t.Error(err)
		}
	}
	fj.mu.Unlock()
	if err := c.put(a, "other", 1); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("the overtaken write: %v, want ErrUnavailable", err)
	}
	select {
	case <-a.Fenced():
	case <-time.After(10 * time.Second): // only a bug waits this long
		t.Fatal("the overtaken anchor is not fenced")
	}
	if _, err := c.call(a, op{Kind: opGet, Key: []byte("k")}); !errors.Is(err, ErrFenced) {
		t.Fatalf("after it was overtaken: %v, want ErrFenced", err)
	}
	sameIndex(t, d.following(t), successor)
}

// TestGroupCommitConcurrent: many clients writing and reading at once
// (under -race): every acknowledged write is in the journal.
func TestGroupCommitConcurrent(t *testing.T) {
	for _, backend := range []string{"file", "journal"} {
		t.Run(backend, func(t *testing.T) {
			d := newDeployment(t)
			fileCfg := AnchorConfig{Dir: t.TempDir(), Master: d.master, Lease: -1, Logger: quiet()}
			var a *Anchor
			if backend == "journal" {
				a = d.open(t, false)
			} else {
				var err error
				if a, err = OpenAnchor(fileCfg); err != nil {
					t.Fatal(err)
				}
				defer a.Close()
			}
			c := newClient(t, d.master)
			const clients, each = 16, 40
			var wg sync.WaitGroup
			errs := make(chan error, clients)
			for i := range clients {
				wg.Go(func() {
					key := "k" + strconv.Itoa(i)
					for v := range uint64(each) {
						if err := c.put(a, key, v+1); err != nil {
							errs <- err
							return
						}
						// A read of another client's key: it may see
						// that client's queued write, and waits for it.
						if _, err := c.call(a, op{Kind: opGet, Key: []byte("k" + strconv.Itoa((i+1)%clients))}); err != nil {
							errs <- err
							return
						}
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			for i := range clients {
				if v := c.version(t, a, "k"+strconv.Itoa(i)); v != each {
					t.Fatalf("k%d is at version %d, want %d", i, v, each)
				}
			}
			// What the log holds is what the anchor served.
			if backend == "journal" {
				sameIndex(t, d.following(t), a)
				return
			}
			a.Close()
			again, err := OpenAnchor(fileCfg)
			if err != nil {
				t.Fatal(err)
			}
			defer again.Close()
			sameIndex(t, again, a)
		})
	}
}
