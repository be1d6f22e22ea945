package state

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/bus"
)

func sampleOps() []op {
	d := sha256.Sum256([]byte("env"))
	return []op{
		{Kind: opGet, Key: []byte("k")},
		{Kind: opPut, Key: []byte("k"), Version: 1 << 62, Rev: 300, Digest: d[:], Size: 1024, Holder: "abc"},
		{Kind: opCAS, Key: []byte("k"), Version: 9, Expect: 8, Rev: 1, Digest: d[:], Tomb: true},
		{Kind: opDel, Key: []byte("k"), Version: 10, Rev: 2, Digest: d[:]},
		{Kind: opList, Prefix: []byte("p"), Start: []byte("p1"), Limit: 1000},
		{Kind: opLease, Holder: "0123456789abcdef01234567"},
	}
}

func sampleResults() []result {
	d := sha256.Sum256([]byte("env"))
	return []result{
		{Status: stOK},
		{Status: stOK, Entry: &entry{Version: 7, Rev: 3, Digest: d[:], Size: 1024}},
		{Status: stConflict, Entry: &entry{Version: 7, Rev: 3, Digest: d[:], Deleted: true}},
		{Status: stOK, Keys: [][]byte{[]byte("a"), []byte("b")}, More: true},
		{Status: stQuota, Msg: "over"},
		{Status: stInvalid, Msg: "invalid key"},
		{Status: stRetry, RetryMS: 1500},
		{Status: stOK, LeaseMS: 2000},
	}
}

func TestOpsRoundTrip(t *testing.T) {
	want := sampleOps()
	b, err := appendOps(nil, want)
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeOps(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
}

func TestResultsRoundTrip(t *testing.T) {
	want := sampleResults()
	b, err := appendResults(nil, want)
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeResults(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
}

func TestEncodeRefuses(t *testing.T) {
	long := bytes.Repeat([]byte("k"), MaxKeyBytes+1)
	for name, o := range map[string]op{
		"unknown kind":  {Kind: "nope"},
		"key too long":  {Kind: opGet, Key: long},
		"holder long":   {Kind: opLease, Holder: strings.Repeat("h", maxHolderBytes+1)},
		"negative size": {Kind: opPut, Size: -1},
	} {
		if _, err := appendOps(nil, []op{o}); err == nil {
			t.Errorf("%s: encoded, want an error", name)
		}
	}
	if _, err := appendResults(nil, []result{{Status: "nope"}}); err == nil {
		t.Error("unknown status: encoded, want an error")
	}
	if _, err := (&AnchorRequest{Namespace: "ns", Name: "fn", Nonce: []byte("short")}).AppendBinary(nil); err == nil {
		t.Error("short nonce: encoded, want an error")
	}
}

func TestDecodeOpsRefuses(t *testing.T) {
	good, _ := appendOps(nil, []op{{Kind: opGet, Key: []byte("k")}})
	// good = count 1 | kind 1 | key len 1 | 'k' | 9 zero fields.
	mut := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	for name, b := range map[string][]byte{
		"empty":          nil,
		"no ops":         {0},
		"too many ops":   binary.AppendUvarint(nil, maxBatch+1),
		"count over len": mut(func(b []byte) []byte { b[0] = 2; return b }),
		"unknown kind":   mut(func(b []byte) []byte { b[1] = 7; return b }),
		"kind zero":      mut(func(b []byte) []byte { b[1] = 0; return b }),
		"key past end":   mut(func(b []byte) []byte { b[2] = 100; return b }),
		"tomb not bool":  mut(func(b []byte) []byte { b[len(b)-2] = 2; return b }),
		"trailing":       append(bytes.Clone(good), 0),
		"truncated":      good[:len(good)-1],
		"non-minimal":    append([]byte{1, 1, 1, 'k', 0x80, 0}, good[5:]...),
		"key too long": func() []byte {
			b := []byte{1, 1}
			b = binary.AppendUvarint(b, MaxKeyBytes+1)
			b = append(b, bytes.Repeat([]byte("k"), MaxKeyBytes+1)...)
			return append(b, make([]byte, 9)...)
		}(),
	} {
		if ops, err := decodeOps(b); err == nil {
			t.Errorf("%s: decoded %+v, want an error", name, ops)
		}
	}
	if _, err := decodeOps(good); err != nil {
		t.Fatalf("the good message: %v", err)
	}
}

func TestDecodeResultsRefuses(t *testing.T) {
	good, _ := appendResults(nil, []result{{Status: stOK}})
	// good = count 1 | status 1 | flags 0 | keys 0 | msg 0 | lease 0 | retry 0.
	mut := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	for name, b := range map[string][]byte{
		"empty":             nil,
		"unknown status":    mut(func(b []byte) []byte { b[1] = 6; return b }),
		"unknown flag":      mut(func(b []byte) []byte { b[2] = 8; return b }),
		"deleted, no entry": mut(func(b []byte) []byte { b[2] = flagDeleted; return b }),
		"entry missing":     mut(func(b []byte) []byte { b[2] = flagEntry; return b }),
		"keys past end":     mut(func(b []byte) []byte { b[3] = 5; return b }),
		"trailing":          append(bytes.Clone(good), 0),
		"truncated":         good[:len(good)-1],
		"retry over int64":  append(good[:len(good)-1], 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01),
	} {
		if res, err := decodeResults(b); err == nil {
			t.Errorf("%s: decoded %+v, want an error", name, res)
		}
	}
	if _, err := decodeResults(good); err != nil {
		t.Fatalf("the good message: %v", err)
	}
}

func TestWireRoundTrip(t *testing.T) {
	nonce := bytes.Repeat([]byte{7}, nonceSize)
	req := AnchorRequest{Namespace: "ns", Name: "fn", Nonce: nonce, Sealed: []byte("sealed")}
	b, err := req.AppendBinary(nil)
	if err != nil {
		t.Fatal(err)
	}
	var got AnchorRequest
	if err := got.UnmarshalBinary(b); err != nil || !reflect.DeepEqual(got, req) {
		t.Fatalf("request: got %+v, %v; want %+v", got, err, req)
	}
	if err := got.UnmarshalBinary(b[:len(b)-len(req.Sealed)-1]); err == nil {
		t.Fatal("a request with a short nonce decoded")
	}
	if err := got.UnmarshalBinary([]byte(`{"namespace":"ns"}`)); err == nil {
		t.Fatal("a JSON request decoded as binary")
	}
	rep := AnchorReply{Nonce: nonce, Sealed: []byte("sealed")}
	if b, err = rep.AppendBinary(nil); err != nil {
		t.Fatal(err)
	}
	var gotRep AnchorReply
	if err := gotRep.UnmarshalBinary(b); err != nil || !reflect.DeepEqual(gotRep, rep) {
		t.Fatalf("reply: got %+v, %v; want %+v", gotRep, err, rep)
	}
	if err := gotRep.UnmarshalBinary(b[:nonceSize]); err == nil {
		t.Fatal("a truncated reply decoded")
	}
}

// TestBusTransport runs the store over the bus, the anchor served as the
// coordinator serves it (bus.ServeBytes, the wire encoding both ways).
func TestBusTransport(t *testing.T) {
	e := newEnv(t, Limits{})
	ctx := context.Background()
	s := busStore(t, e, 8)
	k, _ := DeriveKey(e.master, "ns", "fn")
	f, _ := s.Function("ns", "fn", k)
	mustPut(t, f, "a", "1")
	wantValue(t, f, "a", "1")
	if ok, err := f.CompareAndSwap(ctx, []byte("a"), []byte("1"), true, nil, false); !ok || err != nil {
		t.Fatalf("cas delete: %v, %v", ok, err)
	}
	if keys, _, err := f.List(ctx, nil, nil, 10); err != nil || len(keys) != 0 {
		t.Fatalf("list = %q, %v; want none", keys, err)
	}
	// A wrong state key is refused at the anchor, and the refusal
	// reaches the worker as the coordinator's error.
	wrong, _ := s.Function("ns", "fn", bytes.Repeat([]byte{1}, KeySize))
	err := wrong.Put(ctx, []byte("a"), []byte("2"))
	var ae *apierr.Error
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("put with a wrong key: %v (%v), want the anchor's refusal", err, errors.As(err, &ae))
	}
}

// FuzzDecodeOps checks that the batch decoder never panics and that
// whatever it accepts has exactly one encoding: the one it was given.
func FuzzDecodeOps(f *testing.F) {
	b, _ := appendOps(nil, sampleOps())
	f.Add(b)
	f.Add([]byte{1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		ops, err := decodeOps(b)
		if err != nil {
			return
		}
		out, err := appendOps(nil, ops)
		if err != nil || !bytes.Equal(out, b) {
			t.Fatalf("%x decoded to %+v, which encodes to %x, %v", b, ops, out, err)
		}
	})
}

// FuzzDecodeResults is FuzzDecodeOps for the anchor's results.
func FuzzDecodeResults(f *testing.F) {
	b, _ := appendResults(nil, sampleResults())
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		res, err := decodeResults(b)
		if err != nil {
			return
		}
		out, err := appendResults(nil, res)
		if err != nil || !bytes.Equal(out, b) {
			t.Fatalf("%x decoded to %+v, which encodes to %x, %v", b, res, out, err)
		}
	})
}

// FuzzAnchorWire is FuzzDecodeOps for requests and replies on the bus.
func FuzzAnchorWire(f *testing.F) {
	nonce := make([]byte, nonceSize)
	b, _ := (&AnchorRequest{Namespace: "ns", Name: "fn", Nonce: nonce, Sealed: []byte("x")}).AppendBinary(nil)
	f.Add(b)
	b, _ = (&AnchorReply{Nonce: nonce, Sealed: []byte("x")}).AppendBinary(nil)
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		var req AnchorRequest
		if req.UnmarshalBinary(b) == nil {
			if out, err := req.AppendBinary(nil); err != nil || !bytes.Equal(out, b) {
				t.Fatalf("request %x re-encodes to %x, %v", b, out, err)
			}
		}
		var rep AnchorReply
		if rep.UnmarshalBinary(b) == nil {
			if out, err := rep.AppendBinary(nil); err != nil || !bytes.Equal(out, b) {
				t.Fatalf("reply %x re-encodes to %x, %v", b, out, err)
			}
		}
	})
}

func TestRememberKeepsNewest(t *testing.T) {
	k, err := newKeys(make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	f := &Function{k: k, ns: "ns", name: "fn"}
	hintOf := func() hint {
		_, h, ok := f.lookupKey([]byte("k"))
		if !ok {
			t.Fatal("no hint")
		}
		return h
	}
	f.remember([]byte("k"), 5, 50)
	f.remember([]byte("k"), 3, 30) // a read that learned of an older commit
	if h := hintOf(); h != (hint{5, 50}) {
		t.Fatalf("hint = %+v, want {5 50}", h)
	}
	f.remember([]byte("k"), 6, 60)
	if h := hintOf(); h != (hint{6, 60}) {
		t.Fatalf("hint = %+v, want {6 60}", h)
	}
	f.forget([]byte("k"))
	if _, _, ok := f.lookupKey([]byte("k")); ok {
		t.Fatal("a forgotten hint is still used")
	}
}

// TestKeyNamesCached: a handle computes a key's name in the bucket (an
// HMAC) once and keeps it with the key's hint.
func TestKeyNamesCached(t *testing.T) {
	k, err := newKeys(make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	f := &Function{k: k, ns: "ns", name: "fn"}
	want := k.storeKey("ns", "fn", []byte("k"))
	if name, _, hinted := f.lookupKey([]byte("k")); name != want || hinted {
		t.Fatalf("lookupKey = %q, %v; want %q, no hint", name, hinted, want)
	}
	if ki := f.known["k"]; ki == nil || ki.name != want {
		t.Fatal("the name is not kept")
	}
	f.known["k"].name = "kept"
	if name, _, _ := f.lookupKey([]byte("k")); name != "kept" {
		t.Fatalf("the name was computed again: %q", name)
	}
}

func TestStoreKeyStable(t *testing.T) {
	k, err := newKeys(bytes.Repeat([]byte{3}, KeySize))
	if err != nil {
		t.Fatal(err)
	}
	a := k.storeKey("ns", "fn", []byte("a"))
	for range 3 {
		if got := k.storeKey("ns", "fn", []byte("b")); got == a {
			t.Fatal("two keys share a name")
		}
		if got := k.storeKey("ns", "fn", []byte("a")); got != a {
			t.Fatalf("the name of a changed: %s, then %s", a, got)
		}
	}
}

func TestAnchorRefusesInvalidNames(t *testing.T) {
	e := newEnv(t, Limits{})
	mustPut(t, e.fn(t, "ns", "fn"), "a", "1") // caches the keys of ns/fn
	for _, n := range [][2]string{{"ns", "Fn"}, {"ns/fn", ""}, {"", "fn"}} {
		_, err := e.anchor.Handle(&AnchorRequest{Namespace: n[0], Name: n[1], Nonce: make([]byte, nonceSize), Sealed: make([]byte, 32)})
		if !errors.Is(err, ErrBadRequest) {
			t.Errorf("%q: got %v, want ErrBadRequest", n, err)
		}
	}
}

func TestLogRecordRoundTrip(t *testing.T) {
	d := sha256.Sum256([]byte("env"))
	changes := []change{
		{Key: []byte("a"), Entry: &entry{Version: 7, Rev: 3, Digest: d[:], Size: 1024}},
		{Key: []byte("b"), Entry: &entry{Version: 8, Rev: 4, Digest: d[:], Deleted: true}},
		{Key: []byte("c")},
	}
	want := logRecord{Function: "ns/fn", Changes: changes}
	b, err := appendLogRecord(nil, want.Function, want.Changes)
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeLogRecords(b)
	if err != nil || !reflect.DeepEqual(got, []logRecord{want}) {
		t.Fatalf("got %+v, %v; want %+v", got, err, want)
	}
	// A group commit's record holds several requests' log records.
	other := logRecord{Function: "ns/other", Changes: changes[:1]}
	two, err := appendLogRecord(bytes.Clone(b), other.Function, other.Changes)
	if err != nil {
		t.Fatal(err)
	}
	if got, err = decodeLogRecords(two); err != nil || !reflect.DeepEqual(got, []logRecord{want, other}) {
		t.Fatalf("two records: got %+v, %v", got, err)
	}
	// Records written before the binary encoding are JSON.
	js, _ := json.Marshal(want)
	if got, err = decodeLogRecords(js); err != nil || !reflect.DeepEqual(got, []logRecord{want}) {
		t.Fatalf("JSON record: got %+v, %v; want %+v", got, err, want)
	}
	for name, b := range map[string][]byte{
		"empty":       nil,
		"unknown tag": {0xC2, 0, 0},
		"trailing":    append(bytes.Clone(b), 0),
		"truncated":   b[:len(b)-1],
		"bad entry":   {tagLogRecord, 0, 1, 1, 'k', 2},
		"JSON after":  append(bytes.Clone(b), js...),
	} {
		if rec, err := decodeLogRecords(b); err == nil {
			t.Errorf("%s: decoded %+v, want an error", name, rec)
		}
	}
}

// FuzzDecodeLogRecord is FuzzDecodeOps for the anchor log's records.
func FuzzDecodeLogRecord(f *testing.F) {
	d := sha256.Sum256([]byte("env"))
	b, _ := appendLogRecord(nil, "ns/fn", []change{{Key: []byte("a"), Entry: &entry{Version: 1, Rev: 2, Digest: d[:], Size: 3}}, {Key: []byte("b")}})
	f.Add(b)
	two, _ := appendLogRecord(bytes.Clone(b), "ns/other", nil)
	f.Add(two)
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 0 && b[0] == '{' {
			return // JSON, from before the binary records
		}
		recs, err := decodeLogRecords(b)
		if err != nil {
			return
		}
		var out []byte
		for _, rec := range recs {
			if out, err = appendLogRecord(out, rec.Function, rec.Changes); err != nil {
				break
			}
		}
		if err != nil || !bytes.Equal(out, b) {
			t.Fatalf("%x decoded to %+v, which encodes to %x, %v", b, recs, out, err)
		}
	})
}

// TestPipelineDefault: one anchor batch of a function in flight at a time
// unless the options say otherwise (bench/README.md: fewer, bigger batches).
func TestPipelineDefault(t *testing.T) {
	for _, c := range []struct{ set, want int }{{0, 1}, {3, 3}} {
		s, err := NewStore(Options{KV: nopKV{}, Anchor: LocalTransport{}, Pipeline: c.set})
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
		if s.o.Pipeline != c.want {
			t.Fatalf("Pipeline %d: got %d, want %d", c.set, s.o.Pipeline, c.want)
		}
	}
}

// nopKV stands for a bucket that is never used.
type nopKV struct{ jetstream.KeyValue }

// busStore serves e's anchor on the bus as the coordinator does
// (bus.ServeBytes with workers handlers; a refused request answers
// forbidden) and returns a store that reaches it over the bus. Both stop
// when tb ends.
func busStore(tb testing.TB, e *env, workers int) *Store {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	tb.Cleanup(cancel)
	coord, err := e.srv.Connect("coordinator")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(coord.Close)
	_, err = bus.ServeBytes(ctx, coord, bus.SubjectStateAnchor, bus.CoordinatorQueue, workers, quiet(), func(_ context.Context, b []byte) ([]byte, error) {
		out, err := e.anchor.HandleBinary(b)
		if errors.Is(err, ErrBadRequest) {
			return nil, apierr.New(apierr.Forbidden, "state request refused")
		}
		return out, err
	})
	if err != nil {
		tb.Fatal(err)
	}
	wc, err := e.srv.Connect("worker")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(wc.Close)
	s, err := NewStore(Options{KV: e.kv, Anchor: BusTransport{Conn: wc}, Logger: quiet()})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(s.Close)
	return s
}
