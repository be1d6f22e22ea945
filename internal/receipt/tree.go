package receipt

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"sync"

	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"

	"github.com/cloister-faas/cloister/internal/certs"
)

// A worker may sign the receipts of concurrent calls once, over the root of
// a Merkle tree of them (docs/adr/0025-receipt-trees.md). Each receipt then
// carries its inclusion proof (TreeProof), and verifying it is: hash the
// receipt as a leaf, climb the proof to the root, verify the one signature
// of that root. A Verifier remembers the roots it verified, so a client
// that gets several receipts of one tree verifies the signature once.
//
// The tree is RFC 6962's (leaf hash SHA-256(0x00 ‖ receipt), inner node
// SHA-256(0x01 ‖ left ‖ right)), the ledger's hashing; the leaves are the
// canonical receipt bytes, in the order the worker signed them.

// treeDomain separates tree-root signatures from the other signatures of
// a worker key (single receipts, ledger batches).
const treeDomain = "cloister-receipt-tree-v1\n"

// MaxTreeSize bounds the receipts of one tree, and so a proof's length.
const MaxTreeSize = 1 << 10

// TreeProof places a receipt in the tree whose root its signature signs.
type TreeProof struct {
	Size  uint64   `json:"size"`
	Index uint64   `json:"index"`
	Path  [][]byte `json:"path"`
}

// treeMessage is what a tree signature covers: the domain, the tree's size
// and its root.
func treeMessage(size uint64, root []byte) []byte {
	m := make([]byte, 0, len(treeDomain)+8+len(root))
	m = append(m, treeDomain...)
	m = binary.BigEndian.AppendUint64(m, size)
	return append(m, root...)
}

// SignTree signs the receipts rs with one signature over the root of
// their tree, each with its proof. A single receipt is signed as Sign
// does, without a tree.
func SignTree(rs []*Receipt, key ed25519.PrivateKey, cert certs.Signed) ([]*Signed, error) {
	if len(rs) == 0 || len(rs) > MaxTreeSize {
		return nil, fmt.Errorf("receipt: a tree of %d receipts (want 1 to %d)", len(rs), MaxTreeSize)
	}
	if len(rs) == 1 {
		s, err := Sign(rs[0], key, cert)
		return []*Signed{s}, err
	}
	leaves := make([][]byte, len(rs))
	out := make([]*Signed, len(rs))
	for i, r := range rs {
		body, err := Encode(r)
		if err != nil {
			return nil, fmt.Errorf("encoding receipt: %w", err)
		}
		out[i] = &Signed{Receipt: body, WorkerCert: cert}
		leaves[i] = rfc6962.DefaultHasher.HashLeaf(body)
	}
	size := uint64(len(rs))
	sig := ed25519.Sign(key, treeMessage(size, treeRoot(leaves)))
	for i, s := range out {
		s.Signature = sig
		s.Tree = &TreeProof{Size: size, Index: uint64(i), Path: treePath(leaves, i)}
	}
	return out, nil
}

// treeRoot is RFC 6962's MTH over leaf hashes (at least one).
func treeRoot(leaves [][]byte) []byte {
	if len(leaves) == 1 {
		return leaves[0]
	}
	k := split(len(leaves))
	return rfc6962.DefaultHasher.HashChildren(treeRoot(leaves[:k]), treeRoot(leaves[k:]))
}

// treePath is RFC 6962's PATH(m, D[n]): the inclusion proof of leaf m,
// from the leaf's sibling up.
func treePath(leaves [][]byte, m int) [][]byte {
	if len(leaves) == 1 {
		return nil
	}
	k := split(len(leaves))
	if m < k {
		return append(treePath(leaves[:k], m), treeRoot(leaves[k:]))
	}
	return append(treePath(leaves[k:], m-k), treeRoot(leaves[:k]))
}

// split is the largest power of two smaller than n (n ≥ 2).
func split(n int) int {
	k := 1
	for k<<1 < n {
		k <<= 1
	}
	return k
}

// treeSigned returns the message s's signature signs: its tree's size and
// root, which its proof gives with the receipt as the leaf.
func treeSigned(s *Signed) ([]byte, error) {
	t := s.Tree
	if t.Size < 2 || t.Size > MaxTreeSize {
		return nil, fmt.Errorf("%w: a tree of %d receipts (want 2 to %d)", ErrMalformed, t.Size, MaxTreeSize)
	}
	for _, h := range t.Path {
		if len(h) != sha256.Size {
			return nil, fmt.Errorf("%w: a tree proof's hash of %d bytes", ErrMalformed, len(h))
		}
	}
	root, err := proof.RootFromInclusionProof(rfc6962.DefaultHasher, t.Index, t.Size, rfc6962.DefaultHasher.HashLeaf(s.Receipt), t.Path)
	if err != nil {
		return nil, fmt.Errorf("%w: tree proof: %v", ErrMalformed, err)
	}
	return treeMessage(t.Size, root), nil
}

// rootCache remembers tree signatures that verified: the hash of the
// signing key, the signed message and the signature. It holds at most
// maxRoots, then starts again empty.
type rootCache struct {
	mu sync.Mutex
	m  map[[sha256.Size]byte]struct{}
}

const maxRoots = 4096

func rootKey(key ed25519.PublicKey, msg, sig []byte) [sha256.Size]byte {
	h := sha256.New()
	h.Write(key)
	h.Write(msg)
	h.Write(sig)
	var k [sha256.Size]byte
	h.Sum(k[:0])
	return k
}

// verify checks sig over msg with key, once per distinct triple.
func (c *rootCache) verify(key ed25519.PublicKey, msg, sig []byte) bool {
	k := rootKey(key, msg, sig)
	c.mu.Lock()
	_, ok := c.m[k]
	c.mu.Unlock()
	if ok {
		return true
	}
	if !ed25519.Verify(key, msg, sig) {
		return false
	}
	c.mu.Lock()
	if c.m == nil || len(c.m) >= maxRoots {
		c.m = map[[sha256.Size]byte]struct{}{}
	}
	c.m[k] = struct{}{}
	c.mu.Unlock()
	return true
}
