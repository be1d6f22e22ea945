package journal

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cloister-faas/cloister/internal/bus/bustest"
)

func newJS(t *testing.T) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(bustest.Connect(t))
	if err != nil {
		t.Fatal(err)
	}
	return js
}

var testKey = bytes.Repeat([]byte{7}, 32)

// collector opens a journal whose Apply records what it was given.
type collector struct {
	*Journal
	got [][]byte
}

func open(t *testing.T, js jetstream.JetStream, key []byte) *collector {
	t.Helper()
	c := &collector{}
	j, err := Open(context.Background(), Config{JS: js, Stream: "TEST_JOURNAL", Subject: "test.journal", Key: key,
		Label: "cloister/test/journal", Apply: func(seq uint64, rec []byte) error {
			if int(seq) != len(c.got)+1 && len(c.got) > 0 {
				return fmt.Errorf("seq %d after %d records", seq, len(c.got))
			}
			c.got = append(c.got, rec)
			return nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	c.Journal = j
	return c
}

func TestAppendAndFollow(t *testing.T) {
	ctx := context.Background()
	js := newJS(t)
	w := open(t, js, testKey)
	for i := range 600 { // more than one fetch batch
		seq, err := w.Append(ctx, fmt.Appendf(nil, "record %d", i))
		if err != nil {
			t.Fatal(err)
		}
		if seq != uint64(i+1) {
			t.Fatalf("record %d stored at %d", i, seq)
		}
	}
	f := open(t, js, testKey)
	n, err := f.CatchUp(ctx)
	if err != nil || n != 600 {
		t.Fatalf("CatchUp = %d, %v; want 600", n, err)
	}
	for i, r := range f.got {
		if string(r) != fmt.Sprintf("record %d", i) {
			t.Fatalf("record %d = %q", i, r)
		}
	}
	// The follower is positioned where the writer is.
	ws, wp := w.Position()
	fs, fp := f.Position()
	if ws != fs || wp != fp {
		t.Fatalf("positions differ: writer %d %x, follower %d %x", ws, wp, fs, fp)
	}
	// Nothing new: nothing applied.
	if n, err := f.CatchUp(ctx); n != 0 || err != nil {
		t.Fatalf("second CatchUp = %d, %v", n, err)
	}
	if len(f.got) != 600 {
		t.Fatalf("applied %d", len(f.got))
	}
	// A journal restored from a saved position reads only what follows.
	if _, err := w.Append(ctx, []byte("after")); err != nil {
		t.Fatal(err)
	}
	g := open(t, js, testKey)
	g.Seek(fs, fp)
	if n, err := g.CatchUp(ctx); n != 1 || err != nil || string(g.got[0]) != "after" {
		t.Fatalf("CatchUp after Seek = %d, %v, %q", n, err, g.got)
	}
}

// TestFenced: two writers, as a coordinator that lost its lease and its
// successor. Only one record can follow a given one; the loser is told.
func TestFenced(t *testing.T) {
	ctx := context.Background()
	js := newJS(t)
	old := open(t, js, testKey)
	if _, err := old.Append(ctx, []byte("one")); err != nil {
		t.Fatal(err)
	}
	successor := open(t, js, testKey)
	if _, err := successor.CatchUp(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := successor.Append(ctx, []byte("two by the successor")); err != nil {
		t.Fatal(err)
	}
	if _, err := old.Append(ctx, []byte("two by the old writer")); !errors.Is(err, ErrFenced) {
		t.Fatalf("stale writer's append: %v, want ErrFenced", err)
	}
	// Caught up, it may write again, after the successor's record.
	if n, err := old.CatchUp(ctx); n != 1 || err != nil {
		t.Fatalf("CatchUp = %d, %v", n, err)
	}
	if seq, err := old.Append(ctx, []byte("three")); err != nil || seq != 3 {
		t.Fatalf("append after catching up = %d, %v", seq, err)
	}
	f := open(t, js, testKey)
	if _, err := f.CatchUp(ctx); err != nil {
		t.Fatal(err)
	}
	want := []string{"one", "two by the successor", "three"}
	for i, r := range f.got {
		if string(r) != want[i] {
			t.Fatalf("record %d = %q, want %q", i, r, want[i])
		}
	}
}

// TestUntrustedStream: what a host with the NATS server can do to the
// stream is noticed: a forged record, a record sealed under another key,
// a journal replaced by a shorter one.
func TestUntrustedStream(t *testing.T) {
	ctx := context.Background()
	t.Run("forged", func(t *testing.T) {
		js := newJS(t)
		w := open(t, js, testKey)
		if _, err := w.Append(ctx, []byte("genuine")); err != nil {
			t.Fatal(err)
		}
		if _, err := js.Publish(ctx, "test.journal", bytes.Repeat([]byte{1}, 64)); err != nil {
			t.Fatal(err)
		}
		f := open(t, js, testKey)
		if n, err := f.CatchUp(ctx); !errors.Is(err, ErrCorrupt) || n != 1 {
			t.Fatalf("CatchUp over a forged record = %d, %v; want 1 and ErrCorrupt", n, err)
		}
		// The honest writer is fenced by the forged record, not fooled.
		if _, err := w.Append(ctx, []byte("next")); !errors.Is(err, ErrFenced) {
			t.Fatalf("append after a forged record: %v", err)
		}
	})
	t.Run("other key", func(t *testing.T) {
		js := newJS(t)
		w := open(t, js, bytes.Repeat([]byte{8}, 32))
		if _, err := w.Append(ctx, []byte("someone else's")); err != nil {
			t.Fatal(err)
		}
		f := open(t, js, testKey)
		if _, err := f.CatchUp(ctx); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("CatchUp of another key's record: %v", err)
		}
	})
	t.Run("moved", func(t *testing.T) {
		// The same records under another label (another journal) do not
		// open.
		js := newJS(t)
		w := open(t, js, testKey)
		if _, err := w.Append(ctx, []byte("ledger record")); err != nil {
			t.Fatal(err)
		}
		j, err := Open(ctx, Config{JS: js, Stream: "TEST_JOURNAL", Subject: "test.journal", Key: testKey,
			Label: "cloister/test/other", Apply: func(uint64, []byte) error { return nil }})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := j.CatchUp(ctx); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("CatchUp under another label: %v", err)
		}
	})
	t.Run("rolled back", func(t *testing.T) {
		js := newJS(t)
		w := open(t, js, testKey)
		for range 3 {
			if _, err := w.Append(ctx, []byte("r")); err != nil {
				t.Fatal(err)
			}
		}
		// The host replaces the stream with a shorter copy.
		if err := js.DeleteStream(ctx, "TEST_JOURNAL"); err != nil {
			t.Fatal(err)
		}
		w2 := open(t, js, testKey)
		if _, err := w2.Append(ctx, []byte("r")); err != nil {
			t.Fatal(err)
		}
		if _, err := w.CatchUp(ctx); !errors.Is(err, ErrRolledBack) {
			t.Fatalf("CatchUp of a shorter stream: %v", err)
		}
	})
	t.Run("oversized", func(t *testing.T) {
		w := open(t, newJS(t), testKey)
		if _, err := w.Append(ctx, make([]byte, MaxRecord+1)); !errors.Is(err, ErrTooLarge) {
			t.Fatalf("oversized append: %v", err)
		}
	})
}

func TestApplyErrorStopsAndRetries(t *testing.T) {
	ctx := context.Background()
	js := newJS(t)
	w := open(t, js, testKey)
	for _, r := range []string{"a", "b", "c"} {
		if _, err := w.Append(ctx, []byte(r)); err != nil {
			t.Fatal(err)
		}
	}
	fail := true
	var got []string
	f, err := Open(ctx, Config{JS: js, Stream: "TEST_JOURNAL", Subject: "test.journal", Key: testKey,
		Label: "cloister/test/journal", Apply: func(seq uint64, rec []byte) error {
			if seq == 2 && fail {
				return errors.New("disk full")
			}
			got = append(got, string(rec))
			return nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := f.CatchUp(ctx); n != 1 || err == nil {
		t.Fatalf("CatchUp = %d, %v; want 1 and an error", n, err)
	}
	fail = false
	if n, err := f.CatchUp(ctx); n != 2 || err != nil {
		t.Fatalf("CatchUp = %d, %v; want 2", n, err)
	}
	if fmt.Sprint(got) != "[a b c]" {
		t.Fatalf("applied %v", got)
	}
}

// TestCatchUpUnanswered: a request to the stream that gets no answer (sent
// to a leader that has just died) is given up after transientTry and sent
// again, instead of holding the catch-up to the caller's deadline.
func TestCatchUpUnanswered(t *testing.T) {
	ctx := context.Background()
	nc := bustest.Connect(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	w := open(t, js, testKey)
	for i := range 3 {
		if _, err := w.Append(ctx, fmt.Appendf(nil, "record %d", i)); err != nil {
			t.Fatal(err)
		}
	}
	// The follower's JetStream API goes through a proxy that loses the
	// first stream-info request it sees once armed.
	var armed, dropped atomic.Bool
	if _, err := nc.Subscribe("proxy.>", func(m *nats.Msg) {
		suffix := strings.TrimPrefix(m.Subject, "proxy.")
		if strings.HasPrefix(suffix, "STREAM.INFO.") && armed.Load() && dropped.CompareAndSwap(false, true) {
			return
		}
		fwd := nats.NewMsg("$JS.API." + suffix)
		fwd.Reply, fwd.Data, fwd.Header = m.Reply, m.Data, m.Header
		_ = nc.PublishMsg(fwd)
	}); err != nil {
		t.Fatal(err)
	}
	pjs, err := jetstream.NewWithAPIPrefix(nc, "proxy")
	if err != nil {
		t.Fatal(err)
	}
	f := open(t, pjs, testKey)
	armed.Store(true)
	// Longer than one try and a wait, shorter than nats.go's default wait.
	cctx, cancel := context.WithTimeout(ctx, transientTry+transientWait+1500*time.Millisecond)
	defer cancel()
	n, err := f.CatchUp(cctx)
	if err != nil || n != 3 {
		t.Fatalf("CatchUp = %d, %v; want 3", n, err)
	}
	if !dropped.Load() {
		t.Fatal("the proxy lost no request: the test tested nothing")
	}
}
