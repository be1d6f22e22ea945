package receipt_test

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"testing"

	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"

	"github.com/cloister-faas/cloister/internal/certs"
	"github.com/cloister-faas/cloister/internal/receipt"
)

// treeOf signs n receipts, with invocation ids inv-0, inv-1..., in one
// tree; a second tree of the same size differs by its receipts' metering.
func treeOf(t *testing.T, n int, second ...bool) []*receipt.Signed {
	t.Helper()
	rs := make([]*receipt.Receipt, n)
	for i := range rs {
		rs[i] = testReceipt()
		rs[i].InvocationID = fmt.Sprintf("inv-%d", i)
		if len(second) > 0 {
			rs[i].Metering.InputBytes = i64(99)
		}
	}
	ss, err := receipt.SignTree(rs, workerKey, issue(t, coordinator, workerCert()))
	if err != nil {
		t.Fatal(err)
	}
	return ss
}

// TestSignTree: every receipt of trees of 1 to 33 verifies on its own,
// and its proof is a valid RFC 6962 inclusion proof; a tree of one is a
// plain signature.
func TestSignTree(t *testing.T) {
	for n := 1; n <= 33; n++ {
		ss := treeOf(t, n)
		if len(ss) != n {
			t.Fatalf("%d receipts signed, want %d", len(ss), n)
		}
		if n == 1 {
			if ss[0].Tree != nil {
				t.Fatal("a single receipt carries a tree")
			}
			if _, err := receipt.Verify(ss[0], pub(1), expect()); err != nil {
				t.Fatal(err)
			}
			continue
		}
		var root []byte
		for i, s := range ss {
			if s.Tree == nil || s.Tree.Size != uint64(n) || s.Tree.Index != uint64(i) {
				t.Fatalf("n=%d i=%d: tree %+v", n, i, s.Tree)
			}
			if !bytes.Equal(s.Signature, ss[0].Signature) {
				t.Fatalf("n=%d: receipts of one tree carry different signatures", n)
			}
			if _, err := receipt.Verify(s, pub(1), expect()); err != nil {
				t.Fatalf("n=%d i=%d: %v", n, i, err)
			}
			r, err := proof.RootFromInclusionProof(rfc6962.DefaultHasher, s.Tree.Index, s.Tree.Size, rfc6962.DefaultHasher.HashLeaf(s.Receipt), s.Tree.Path)
			if err != nil {
				t.Fatalf("n=%d i=%d: %v", n, i, err)
			}
			if root == nil {
				root = r
			} else if !bytes.Equal(r, root) {
				t.Fatalf("n=%d i=%d: the proofs lead to different roots", n, i)
			}
		}
	}
	if _, err := receipt.SignTree(nil, workerKey, issue(t, coordinator, workerCert())); err == nil {
		t.Error("an empty tree was signed")
	}
}

// TestTreeRefused: a receipt of a tree with anything changed (its bytes,
// its place, its proof, the signature) is refused; so is a receipt moved
// to another tree's signature.
func TestTreeRefused(t *testing.T) {
	ss := treeOf(t, 5)
	other := treeOf(t, 5, true)
	clone := func(s *receipt.Signed) *receipt.Signed {
		c := *s
		tr := *s.Tree
		tr.Path = make([][]byte, len(s.Tree.Path))
		for i, h := range s.Tree.Path {
			tr.Path[i] = bytes.Clone(h)
		}
		c.Tree = &tr
		c.Receipt = bytes.Clone(s.Receipt)
		return &c
	}
	for name, edit := range map[string]func(s *receipt.Signed){
		"receipt bytes":        func(s *receipt.Signed) { s.Receipt = bytes.Replace(s.Receipt, []byte("inv-2"), []byte("inv-9"), 1) },
		"index":                func(s *receipt.Signed) { s.Tree.Index = 3 },
		"index out of range":   func(s *receipt.Signed) { s.Tree.Index = 5 },
		"size":                 func(s *receipt.Signed) { s.Tree.Size = 6 },
		"size of one":          func(s *receipt.Signed) { s.Tree.Size, s.Tree.Index, s.Tree.Path = 1, 0, nil },
		"size over the limit":  func(s *receipt.Signed) { s.Tree.Size = receipt.MaxTreeSize + 1 },
		"a path hash":          func(s *receipt.Signed) { s.Tree.Path[0][0] ^= 1 },
		"a short path hash":    func(s *receipt.Signed) { s.Tree.Path[1] = s.Tree.Path[1][:31] },
		"a hash dropped":       func(s *receipt.Signed) { s.Tree.Path = s.Tree.Path[1:] },
		"a hash added":         func(s *receipt.Signed) { s.Tree.Path = append(s.Tree.Path, s.Tree.Path[0]) },
		"another signature":    func(s *receipt.Signed) { s.Signature = other[2].Signature },
		"no tree":              func(s *receipt.Signed) { s.Tree = nil },
		"the signature itself": func(s *receipt.Signed) { s.Signature = bytes.Clone(s.Signature); s.Signature[0] ^= 1 },
	} {
		s := clone(ss[2])
		edit(s)
		v := receipt.NewVerifier(pub(1))
		for _, verify := range []func() error{
			func() error { _, err := receipt.Verify(s, pub(1), receipt.Expect{}); return err },
			func() error { _, err := v.Verify(s, receipt.Expect{}); return err },
		} {
			err := verify()
			if !errors.Is(err, receipt.ErrSignature) && !errors.Is(err, receipt.ErrMalformed) {
				t.Errorf("%s: got %v, want a signature or malformed error", name, err)
			}
		}
	}
}

// TestVerifierRemembersRoots: a Verifier that verified one receipt of a
// tree accepts the others without the signature check; and what it
// remembers never lets through a receipt it did not verify.
func TestVerifierRemembersRoots(t *testing.T) {
	ss := treeOf(t, 4)
	v := receipt.NewVerifier(pub(1))
	for _, s := range ss {
		if _, err := v.Verify(s, receipt.Expect{}); err != nil {
			t.Fatal(err)
		}
	}
	// The remembered root does not cover a receipt outside its tree.
	forged := *ss[1]
	forged.Receipt = bytes.Replace(forged.Receipt, []byte("inv-1"), []byte("inv-7"), 1)
	if _, err := v.Verify(&forged, receipt.Expect{}); !errors.Is(err, receipt.ErrSignature) {
		t.Errorf("forged receipt: got %v, want ErrSignature", err)
	}
	// Nor another worker's signature of the same root.
	c := workerCert()
	c.WorkerID, c.SigningKey = "w-2", pub(11)
	other := *ss[0]
	other.WorkerCert = issue(t, coordinator, c)
	if _, err := v.Verify(&other, receipt.Expect{}); err == nil {
		t.Error("a receipt under another worker's certificate verified")
	}
}

// TestTreeEntryIsJSON: the ledger entry of a receipt of a tree is what
// json.Marshal writes, and decodes back to the same receipt.
func TestTreeEntryIsJSON(t *testing.T) {
	for _, s := range append(treeOf(t, 3), &receipt.Signed{Receipt: []byte("x"), Tree: &receipt.TreeProof{Size: 2}},
		&receipt.Signed{Tree: &receipt.TreeProof{Size: 1 << 63, Index: 7, Path: [][]byte{{}, nil, {1}}}}) {
		want, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		got, err := s.Entry()
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("Entry:\n got %s\nwant %s", got, want)
		}
	}
	s := treeOf(t, 3)[1]
	e, _ := s.Entry()
	var back receipt.Signed
	if err := json.Unmarshal(e, &back); err != nil {
		t.Fatal(err)
	}
	if _, err := receipt.Verify(&back, pub(1), receipt.Expect{}); err != nil {
		t.Fatalf("the entry decoded does not verify: %v", err)
	}
}

// BenchmarkSignTree: one signature for a tree of 4 receipts, against 4
// signatures (receipt.Sign), per receipt.
func BenchmarkSignTree(b *testing.B) {
	cert := certs.Signed{Body: bytes.Repeat([]byte("c"), 900), Signature: bytes.Repeat([]byte("s"), ed25519.SignatureSize)}
	rs := make([]*receipt.Receipt, 4)
	for i := range rs {
		rs[i] = testReceipt()
		rs[i].InvocationID = fmt.Sprintf("inv-%d", i)
	}
	b.Run("tree-of-4", func(b *testing.B) {
		for b.Loop() {
			if _, err := receipt.SignTree(rs, workerKey, cert); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("4-signatures", func(b *testing.B) {
		for b.Loop() {
			for _, r := range rs {
				if _, err := receipt.Sign(r, workerKey, cert); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
}
