package gateway

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"

	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/bus"
	"github.com/cloister-faas/cloister/internal/wire"
)

// fakeEntry is a ledger entry shaped as receipt.Signed.Entry writes it,
// for a receipt of namespace ns.
func fakeEntry(ns string, i int) []byte {
	r := base64.StdEncoding.EncodeToString(fmt.Appendf(nil, `{"v":1,"invocation_id":"%d","namespace":%q}`, i, ns))
	return []byte(`{"receipt":"` + r + `","sig":"AA==","worker_cert":{"body":"AA==","sig":"AA=="}}`)
}

// bundleOf encodes entries as a tlog-tiles entry bundle.
func bundleOf(entries [][]byte) []byte {
	var b []byte
	for _, e := range entries {
		b = binary.BigEndian.AppendUint16(b, uint16(len(e)))
		b = append(b, e...)
	}
	return b
}

// fakeLedger answers the coordinator's ledger subjects from memory: a log
// of 259 entries, all of team-a but entry 7 (team-b), whose checkpoint
// covers 259; entry 300 is indexed but not in a checkpoint yet.
func fakeLedger(t *testing.T, e *keyEnv) (hashes map[int]string) {
	t.Helper()
	var entries [][]byte
	for i := range 259 {
		ns := "team-a"
		if i == 7 {
			ns = "team-b"
		}
		entries = append(entries, fakeEntry(ns, i))
	}
	files := map[string][]byte{
		"checkpoint":           []byte("cloister/test\n259\nAAAA\n\n— cloister sig\n"),
		"tile/0/000":           make([]byte, 256*32),
		"tile/entries/000":     bundleOf(entries[:256]),
		"tile/entries/001.p/3": bundleOf(entries[256:]),
	}
	index := map[string]uint64{}
	hashes = map[int]string{}
	for i, en := range append(entries[:259:259], fakeEntry("team-a", 300)) {
		if i == 259 {
			i = 300
		}
		h := sha256.Sum256(en)
		index[string(h[:])] = uint64(i)
		hashes[i] = hex.EncodeToString(h[:])
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	nc := e.g.cfg.Conn
	if _, err := bus.ServeBytes(ctx, nc, bus.SubjectLedgerRead, "", 0, quiet, func(_ context.Context, p []byte) ([]byte, error) {
		if b, ok := files[string(p)]; ok {
			return b, nil
		}
		return nil, apierr.New(apierr.NotFound, "%s is not in the ledger", p)
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := bus.ServeBytes(ctx, nc, bus.SubjectLedgerLookup, "", 0, quiet, func(_ context.Context, sum []byte) ([]byte, error) {
		if idx, ok := index[string(sum)]; ok {
			return binary.BigEndian.AppendUint64(nil, idx), nil
		}
		return nil, apierr.New(apierr.NotFound, "not logged")
	}); err != nil {
		t.Fatal(err)
	}
	return hashes
}

// TestLedgerReadsScoped: a key reads the checkpoint, the hash tiles and
// its own namespace's entries and receipt indices; another namespace's
// entries and indices need a platform key.
func TestLedgerReadsScoped(t *testing.T) {
	e := newKeyEnv(t)
	hashes := fakeLedger(t, e)
	a := e.create(e.platform, wire.APIKeyRequest{Namespace: "team-a", Scope: "invoke"}).Key
	b := e.create(e.platform, wire.APIKeyRequest{Namespace: "team-b", Scope: "admin"}).Key
	for _, c := range []struct {
		who, key, path string
		want           apierr.Code
	}{
		{"team-a", a, "/v1/ledger/log/checkpoint", ""},
		{"team-b", b, "/v1/ledger/log/checkpoint", ""},
		{"team-b", b, "/v1/ledger/log/tile/0/000", ""},
		{"team-a", a, "/v1/ledger/log/tile/entries/000", apierr.Forbidden}, // holds team-b's entry 7
		{"team-a", a, "/v1/ledger/log/tile/entries/001.p/3", ""},
		{"team-b", b, "/v1/ledger/log/tile/entries/001.p/3", apierr.Forbidden},
		{"team-b", b, "/v1/ledger/log/tile/entries/000", apierr.Forbidden},
		{"platform", e.platform, "/v1/ledger/log/tile/entries/000", ""},
		{"team-a", a, "/v1/ledger/receipts/" + hashes[3], ""},
		{"team-a", a, "/v1/ledger/receipts/" + hashes[257], ""}, // in the partial bundle
		{"team-a", a, "/v1/ledger/receipts/" + hashes[7], apierr.Forbidden},
		{"team-b", b, "/v1/ledger/receipts/" + hashes[7], ""},
		{"team-b", b, "/v1/ledger/receipts/" + hashes[3], apierr.Forbidden},
		{"team-a", a, "/v1/ledger/receipts/" + hashes[300], apierr.NotFound}, // no checkpoint covers it
		{"platform", e.platform, "/v1/ledger/receipts/" + hashes[7], ""},
		{"platform", e.platform, "/v1/ledger/receipts/" + hashes[300], ""},
	} {
		code, got, body := e.call(e.g, "GET", c.path, c.key, "")
		if got != c.want || (c.want == "" && code != http.StatusOK) {
			t.Errorf("%s: GET %s: got %d %q %s, want %q", c.who, c.path, code, got, body, c.want)
		}
		if c.want == "" && len(c.path) > 20 && c.path[:20] == "/v1/ledger/receipts/" {
			var lk wire.LedgerLookup
			if json.Unmarshal(body, &lk) != nil || lk.EntryHash != c.path[20:] {
				t.Errorf("%s: lookup answer %s", c.who, body)
			}
		}
	}
}

func TestCheckpointSize(t *testing.T) {
	for _, c := range []struct {
		in   string
		want uint64
		ok   bool
	}{
		{"o\n12\nAAAA\n\n— o sig\n", 12, true},
		{"o\n0\nAAAA\n", 0, true},
		{"o\n-1\nAAAA\n", 0, false},
		{"o\n12", 0, false},
		{"", 0, false},
	} {
		if got, ok := checkpointSize([]byte(c.in)); got != c.want || ok != c.ok {
			t.Errorf("checkpointSize(%q) = %d, %v; want %d, %v", c.in, got, ok, c.want, c.ok)
		}
	}
}
