package gateway

import (
	"testing"

	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/bus/bustest"
)

// TestOpenWhiskReadsFollowed: what an OpenWhisk invocation reads besides
// the registry (the action's default parameters, and whether its name is
// a sequence) comes from memory once the gateway follows those buckets,
// and a sequence another gateway stores is found once the watch delivers
// it (docs/adr/0023-followed-buckets.md).
func TestOpenWhiskReadsFollowed(t *testing.T) {
	nc, st, as, _ := testStores(t, "acme")
	ow, seqs := &bustest.CountingKV{KeyValue: as.OpenWhisk}, &bustest.CountingKV{KeyValue: as.Sequences}
	raw := as.Sequences
	as.OpenWhisk, as.Sequences = ow, seqs
	g := New(Config{Conn: nc, Stores: st, Async: as, Logger: quiet})
	ctx := t.Context()
	if err := g.owPutMeta(ctx, actionMetaKey("acme", "fn"), &owMeta{Parameters: []OWKeyValue{{Key: "k", Value: []byte(`"v"`)}}}); err != nil {
		t.Fatal(err)
	}
	bustest.Eventually(t, "following the OpenWhisk and sequence buckets", func() bool {
		return g.owActions.Following() && g.sequences.Following()
	})
	before := ow.Gets() + seqs.Gets()
	for range 20 {
		m, err := g.owMetaFollowed(ctx, actionMetaKey("acme", "fn"))
		if err != nil || len(m.Parameters) != 1 || string(m.Parameters[0].Value) != `"v"` {
			t.Fatalf("owMeta = %+v, %v", m, err)
		}
		if _, err := g.sequenceFollowed(ctx, "acme", "fn"); apierr.CodeOf(err) != apierr.NotFound {
			t.Fatalf("sequence: %v, want not_found", err)
		}
	}
	// One read at most, for the sequence's first absence. The routes that
	// show or change a record read the store.
	if n := ow.Gets() + seqs.Gets() - before; n > 1 {
		t.Fatalf("%d store reads for 20 invocations' lookups, want at most 1", n)
	}
	// Another gateway stores a sequence under the name: found once the
	// watch delivers it, without a read per call.
	if _, err := raw.Put(ctx, sequenceKey("acme", "fn"), []byte(`{"namespace":"acme","name":"fn"}`)); err != nil {
		t.Fatal(err)
	}
	// The routes that show or run a sequence read the store: they see it at once.
	if s, err := g.sequence(ctx, "acme", "fn"); err != nil || s.Name != "fn" {
		t.Fatalf("sequence right after another gateway stored it: %+v, %v", s, err)
	}
	bustest.Eventually(t, "another gateway's sequence", func() bool {
		s, err := g.sequenceFollowed(ctx, "acme", "fn")
		return err == nil && s.Name == "fn"
	})
}
