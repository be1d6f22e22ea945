// Package billing is what an audit of the ledger does with each entry:
// it verifies the entry as a signed receipt, back to the attested
// coordinator's key, and adds the receipt's metering to a bill per
// namespace and function. `cloister ledger audit` passes Auditor.Check to
// ledger.Reader.Audit, which replays the log and checks its Merkle root.
//
// A receipt logged more than once (the same entry bytes at two indices: a
// worker's batch retried after the coordinator restarted and forgot it had
// logged it) is billed once and counted as a duplicate. A duplicate is not
// tampering: every copy verifies and the log's root commits to all of them.
//
// This package never bills an entry that does not verify, and never bills
// the same entry twice. It trusts nothing in an entry but what the receipt
// signature chain proves.
package billing

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/cloister-faas/cloister/internal/ledger"
	"github.com/cloister-faas/cloister/internal/receipt"
	"github.com/cloister-faas/cloister/internal/strictjson"
)

// ErrNotReceipt means an entry is not a signed receipt in its canonical
// ledger encoding (receipt.Signed.Entry). An audit reports it as
// ledger.ErrCheckFailed, as it does the receipt package's verification
// errors (receipt.ErrChain, receipt.ErrSignature, receipt.ErrMalformed,
// receipt.ErrMismatch).
var ErrNotReceipt = errors.New("billing: not a signed receipt in canonical encoding")

// MaxDuplicates bounds the duplicates Auditor.Duplicates lists; the count
// covers them all.
const MaxDuplicates = 1000

// Line is the bill of one function: the sums over the verified receipts
// that name it, each counted once. Metering a receipt does not carry (it
// was not measured) adds nothing.
type Line struct {
	Namespace string `json:"namespace"`
	Function  string `json:"function"`
	// Caller is the hash of the caller key (receipt caller_sha256) in a
	// bill per caller (PerCaller); "" there stands for anonymous and
	// plaintext calls, and everywhere else for all callers.
	Caller      string `json:"caller_sha256,omitempty"`
	Invocations uint64 `json:"invocations"`
	// Failed counts the invocations whose status is not "ok".
	Failed       uint64 `json:"failed"`
	Instructions uint64 `json:"instructions"`
	WallNanos    int64  `json:"wall_ns"`
	CPUNanos     int64  `json:"cpu_ns"`
	InputBytes   int64  `json:"input_bytes"`
	OutputBytes  int64  `json:"output_bytes"`
	// PeakPages is the largest peak_memory_pages of any invocation.
	PeakPages uint32 `json:"peak_memory_pages"`
	// Duplicates counts the entries that repeated a receipt already
	// billed: they are not in the other fields.
	Duplicates uint64 `json:"duplicates"`
}

// Duplicate is an entry that repeats the receipt at a lower index.
type Duplicate struct {
	Index uint64 `json:"index"`
	First uint64 `json:"first_index"`
}

// digest is the first 16 bytes of sha256(entry): what the auditor keeps per
// entry. A collision needs two entries, each carrying a worker's Ed25519
// signature, whose hashes agree on 128 bits: no one but an attested worker
// can make a valid entry, and it cannot choose the signature bytes.
type digest [16]byte

type lineKey struct{ namespace, function, caller string }

type dupAt struct {
	index uint64
	d     digest
}

// Auditor verifies ledger entries and bills them. Its Check is a
// ledger.CheckFunc: safe for concurrent use, in any order. Read the bill
// with Bill and Duplicates once the audit has returned.
type Auditor struct {
	v         *receipt.Verifier
	perCaller bool

	mu    sync.Mutex
	lines map[lineKey]*Line
	seen  map[digest]uint64 // lowest index of each billed entry
	dups  []dupAt           // at most MaxDuplicates
	ndups uint64
}

// NewAuditor returns an Auditor that verifies receipts with v, whose
// coordinator key must come from verified attestation evidence.
func NewAuditor(v *receipt.Verifier) *Auditor {
	return &Auditor{v: v, lines: map[lineKey]*Line{}, seen: map[digest]uint64{}}
}

// PerCaller makes the bill one line per namespace, function and caller
// (the key that signed the requests, as receipts name it). Call it before
// the audit.
func (a *Auditor) PerCaller() { a.perCaller = true }

var _ ledger.CheckFunc = (*Auditor)(nil).Check

// Check verifies the entry at index fully and bills it. The entry must be
// a receipt.Signed in canonical encoding (exactly the bytes of its Entry
// method: one encoding per receipt, so that a duplicate cannot hide behind
// another spelling), and its receipt must verify: worker certificate
// signed by the coordinator and valid at the receipt's time, the worker's
// signature over the canonical receipt, the worker and TEE fields equal to
// the certificate's. A failure is returned and nothing is billed. An entry
// already billed at another index is counted as a duplicate, not billed.
func (a *Auditor) Check(index uint64, entry []byte) error {
	var s receipt.Signed
	if err := strictjson.Unmarshal(entry, &s); err != nil {
		return fmt.Errorf("%w: %v", ErrNotReceipt, err)
	}
	if canon, err := s.Entry(); err != nil || !bytes.Equal(canon, entry) {
		return fmt.Errorf("%w: the entry is not the canonical encoding of its receipt", ErrNotReceipt)
	}
	vr, err := a.v.Verify(&s, receipt.Expect{})
	if err != nil {
		return err
	}
	rc := vr.Receipt
	sum := sha256.Sum256(entry)
	d := digest(sum[:16])

	a.mu.Lock()
	defer a.mu.Unlock()
	k := lineKey{namespace: rc.Namespace, function: rc.Function}
	if a.perCaller {
		k.caller = rc.Caller
	}
	u := a.lines[k]
	if u == nil {
		u = &Line{Namespace: rc.Namespace, Function: rc.Function, Caller: k.caller}
		a.lines[k] = u
	}
	if first, ok := a.seen[d]; ok {
		// Entries arrive in any order: the lowest index is the original.
		dup := index
		if index < first {
			a.seen[d], dup = index, first
		}
		a.ndups++
		u.Duplicates++
		if len(a.dups) < MaxDuplicates {
			a.dups = append(a.dups, dupAt{index: dup, d: d})
		}
		return nil
	}
	a.seen[d] = index
	u.Invocations++
	if rc.Status != "ok" {
		u.Failed++
	}
	m := rc.Metering
	if m.Instructions != nil {
		u.Instructions += *m.Instructions
	}
	if m.WallNanos != nil {
		u.WallNanos += *m.WallNanos
	}
	if m.CPUNanos != nil {
		u.CPUNanos += *m.CPUNanos
	}
	if m.InputBytes != nil {
		u.InputBytes += *m.InputBytes
	}
	if m.OutputBytes != nil {
		u.OutputBytes += *m.OutputBytes
	}
	if m.PeakMemoryPages != nil {
		u.PeakPages = max(u.PeakPages, *m.PeakMemoryPages)
	}
	return nil
}

// Bill returns the bill, one line per namespace and function, sorted by
// namespace then function.
func (a *Auditor) Bill() []Line {
	a.mu.Lock()
	defer a.mu.Unlock()
	lines := make([]Line, 0, len(a.lines))
	for _, u := range a.lines {
		lines = append(lines, *u)
	}
	slices.SortFunc(lines, func(x, y Line) int {
		if c := strings.Compare(x.Namespace, y.Namespace); c != 0 {
			return c
		}
		if c := strings.Compare(x.Function, y.Function); c != 0 {
			return c
		}
		return strings.Compare(x.Caller, y.Caller)
	})
	return lines
}

// Duplicates returns how many entries repeated a receipt billed at a lower
// index, and the first MaxDuplicates of them by index, each with the index
// of the receipt it repeats.
func (a *Auditor) Duplicates() (uint64, []Duplicate) {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]Duplicate, len(a.dups))
	for i, d := range a.dups {
		out[i] = Duplicate{Index: d.index, First: a.seen[d.d]}
	}
	slices.SortFunc(out, func(x, y Duplicate) int {
		switch {
		case x.Index < y.Index:
			return -1
		case x.Index > y.Index:
			return 1
		}
		return 0
	})
	return a.ndups, out
}
