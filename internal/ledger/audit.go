package ledger

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"time"

	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/rfc6962"
	"github.com/transparency-dev/tessera/api"
	"github.com/transparency-dev/tessera/api/layout"
	"github.com/transparency-dev/tessera/client"
)

// CheckFunc checks one entry during an audit; Cloister's verifies a receipt's
// signature chain and adds its usage to the bill. Audit calls it from
// several goroutines at once and in no particular order, so it must be safe
// for concurrent use. entry is valid only during the call.
type CheckFunc func(index uint64, entry []byte) error

// ProgressFunc receives audit progress: done of total entries replayed. It is
// called from one goroutine, in order.
type ProgressFunc func(done, total uint64)

// MaxAuditProblems bounds AuditReport.Problems; Counts counts them all.
const MaxAuditProblems = 1000

// Problem is one finding of an audit.
type Problem struct {
	// Class is the detection class: ErrRootMismatch, ErrModifiedEntry,
	// ErrDroppedEntry, ErrReorderedEntry or ErrCheckFailed.
	Class error
	// Index is the first log index concerned, Count how many (≥ 1).
	Index, Count uint64
	// Detail says what was seen.
	Detail string
	// Err is the underlying error, for ErrCheckFailed the check's.
	Err error
}

func (p Problem) Error() string {
	s := fmt.Sprintf("%v at index %d", p.Class, p.Index)
	if p.Class == ErrRootMismatch {
		s = p.Class.Error()
	} else if p.Count > 1 {
		s = fmt.Sprintf("%v at indices [%d, %d)", p.Class, p.Index, p.Index+p.Count)
	}
	if p.Detail != "" {
		s += ": " + p.Detail
	}
	if p.Err != nil {
		s += ": " + p.Err.Error()
	}
	return s
}

// Unwrap returns the class and the underlying error, so that errors.Is
// matches both (for example ErrCheckFailed and receipt.ErrSignature).
func (p Problem) Unwrap() []error {
	if p.Err == nil {
		return []error{p.Class}
	}
	return []error{p.Class, p.Err}
}

// classes lists the audit classes in report order, with their names in
// AuditReport.Counts.
var classes = []struct {
	err  error
	name string
}{
	{ErrRootMismatch, "root_mismatch"},
	{ErrModifiedEntry, "modified_entry"},
	{ErrDroppedEntry, "dropped_entry"},
	{ErrReorderedEntry, "reordered_entry"},
	{ErrCheckFailed, "check_failed"},
}

// ClassName returns the short name of err's audit class ("modified_entry",
// ...), or "" if it has none.
func ClassName(err error) string {
	for _, c := range classes {
		if errors.Is(err, c.err) {
			return c.name
		}
	}
	return ""
}

// AuditReport is the outcome of Audit.
type AuditReport struct {
	// Checkpoint is the verified checkpoint audited against, CheckpointRaw its note.
	Checkpoint    *Checkpoint
	CheckpointRaw []byte
	// From is the first index replayed; Entries how many entries were read
	// and passed to the check.
	From, Entries uint64
	// Root is the root recomputed from the log (nil if entries were missing);
	// RootMatches tells whether it is the checkpoint's.
	Root        []byte
	RootMatches bool
	// Problems are the findings, by index, at most MaxAuditProblems.
	Problems []Problem
	// Counts counts the findings per class name (see ClassName): the
	// entries concerned for the entry classes, 1 for root_mismatch.
	Counts map[string]uint64
	// Classified is false when the root did not match and the audit could
	// not tell which entries changed, because the hash tiles were rewritten
	// to match the entries; Note says why.
	Classified bool
	Note       string
	Elapsed    time.Duration

	first map[error]Problem
}

// Count returns the count of class (a sentinel) in Counts.
func (r *AuditReport) Count(class error) uint64 {
	if r == nil {
		return 0
	}
	return r.Counts[ClassName(class)]
}

// Err is nil for a clean audit. Otherwise it joins, for each class found,
// its count and first problem; errors.Is matches the classes and the
// errors of failed checks.
func (r *AuditReport) Err() error {
	if r == nil {
		return nil
	}
	var errs []error
	for _, c := range classes {
		if n := r.Counts[c.name]; n > 0 {
			errs = append(errs, fmt.Errorf("%s ×%d: %w", c.name, n, r.first[c.err]))
		}
	}
	return errors.Join(errs...)
}

func (r *AuditReport) add(p Problem) {
	if p.Count == 0 {
		p.Count = 1
	}
	name := ClassName(p.Class)
	r.Counts[name] += p.Count
	if _, ok := r.first[p.Class]; !ok {
		r.first[p.Class] = p
	}
	if len(r.Problems) < MaxAuditProblems {
		r.Problems = append(r.Problems, p)
	}
}

// bundleStatus is what reading one entry bundle gave.
type bundleStatus int

const (
	bundleOK        bundleStatus = iota
	bundleShort                  // fewer entries than the range needs
	bundleMissing                // no such file
	bundleMalformed              // does not parse
)

// bundleRead is one entry bundle of the audited range, read and hashed.
type bundleRead struct {
	ri     layout.RangeInfo
	start  uint64 // log index of the first entry of the range
	status bundleStatus
	have   int    // entries of the range present
	hashes []byte // leaf hashes of the present entries, 32 bytes each
	detail string
	err    error // a read error other than "not found": the audit stops
}

// readBundle reads the bundle of ri and hashes the entries of its range,
// calling check on each when check is not nil.
func (r *Reader) readBundle(ctx context.Context, ri layout.RangeInfo, check CheckFunc, onCheck func(Problem)) bundleRead {
	b := bundleRead{ri: ri, start: ri.Index*layout.EntryBundleWidth + uint64(ri.First)}
	raw, err := r.src.ReadEntryBundle(ctx, ri.Index, ri.Partial)
	if errors.Is(err, os.ErrNotExist) {
		b.status, b.detail = bundleMissing, fmt.Sprintf("entry bundle %d is missing", ri.Index)
		return b
	}
	if err != nil {
		b.err = fmt.Errorf("reading entry bundle %d: %w", ri.Index, err)
		return b
	}
	var eb api.EntryBundle
	if err := eb.UnmarshalText(raw); err != nil {
		b.status, b.detail = bundleMalformed, fmt.Sprintf("entry bundle %d does not parse: %v", ri.Index, err)
		return b
	}
	if len(eb.Entries) > layout.EntryBundleWidth {
		b.status, b.detail = bundleMalformed, fmt.Sprintf("entry bundle %d holds %d entries", ri.Index, len(eb.Entries))
		return b
	}
	lo, hi := int(ri.First), int(ri.First+ri.N)
	if len(eb.Entries) < hi {
		b.status = bundleShort
		b.detail = fmt.Sprintf("entry bundle %d holds %d entries, the checkpoint needs %d", ri.Index, len(eb.Entries), hi)
		hi = max(lo, len(eb.Entries))
	}
	b.have = hi - lo
	b.hashes = make([]byte, 0, sha256.Size*b.have)
	h := sha256.New()
	for k := lo; k < hi; k++ {
		e := eb.Entries[k]
		h.Reset()
		h.Write([]byte{rfc6962.RFC6962LeafHashPrefix})
		h.Write(e)
		b.hashes = h.Sum(b.hashes)
		if check != nil {
			idx := b.start + uint64(k-lo)
			if err := check(idx, e); err != nil {
				onCheck(Problem{Class: ErrCheckFailed, Index: idx, Count: 1, Err: err})
			}
		}
	}
	return b
}

var rangeFactory = compact.RangeFactory{Hash: rfc6962.DefaultHasher.HashChildren}

// auditJob is one bundle in the audit pipeline.
type auditJob struct {
	ri     layout.RangeInfo
	b      bundleRead
	rng    *compact.Range // the bundle's leaves, when complete
	checks []Problem
	done   chan struct{}
}

// Audit replays the log from index from up to the latest verified checkpoint.
// It calls check on every entry (concurrently, see CheckFunc), recomputes
// the Merkle root from the leaves (the part below from comes from the
// log's tiles) and compares it with the checkpoint's signed root, so that any
// modified, dropped or reordered entry is caught.
//
// When the root does not match, Audit tells the classes apart by comparing
// the leaves with the level-0 hash tiles, provided those tiles hash to the
// signed root (they do when only entry bundles were changed): a leaf that is
// not in the signed tree is ErrModifiedEntry, a signed leaf that is absent is
// ErrDroppedEntry, and a signed leaf at another position is
// ErrReorderedEntry. If the tiles were rewritten to match, only
// ErrRootMismatch can be said (plus ErrDroppedEntry for bundles that are
// short or missing), and the report says so. A checkpoint that does not
// verify stops the audit with ErrBadSignature or ErrBadCheckpoint.
//
// Audit returns the report and a nil error when the log is clean, the
// report and report.Err() when it found problems, and an error that wraps
// none of the classes when it could not finish.
func (r *Reader) Audit(ctx context.Context, from uint64, check CheckFunc, progress ProgressFunc) (*AuditReport, error) {
	begin := time.Now()
	rep := &AuditReport{From: from, Counts: map[string]uint64{}, first: map[error]Problem{}, Classified: true}
	defer func() { rep.Elapsed = time.Since(begin) }()

	cp, raw, err := r.VerifiedCheckpoint(ctx)
	if err != nil {
		return rep, fmt.Errorf("auditing: %w", err)
	}
	rep.Checkpoint, rep.CheckpointRaw = cp, raw
	if from > cp.Size {
		return rep, fmt.Errorf("auditing: from %d is beyond the checkpoint size %d", from, cp.Size)
	}
	total := cp.Size - from

	// The compact range of [0, from) comes from the tiles: if they lie, the
	// root will not match.
	rootable := true
	var rng *compact.Range
	if from == 0 {
		rng = rangeFactory.NewEmptyRange(0)
	} else {
		nodes, err := client.FetchRangeNodes(ctx, from, r.src.ReadTile)
		if err == nil {
			rng, err = rangeFactory.NewRange(0, from, nodes)
		}
		if err != nil {
			rootable = false
			rep.Note = fmt.Sprintf("the tiles below index %d are unreadable: %v", from, err)
		}
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	workers := max(4, 2*runtime.GOMAXPROCS(0))
	work := make(chan *auditJob, workers)
	pending := make(chan *auditJob, 4*workers)
	for range workers {
		go func() {
			for j := range work {
				j.b = r.readBundle(ctx, j.ri, check, func(p Problem) { j.checks = append(j.checks, p) })
				if j.b.status == bundleOK && j.b.err == nil {
					j.rng = rangeFactory.NewEmptyRange(j.b.start)
					for k := 0; k < j.b.have; k++ {
						// Fails only on a corrupted range; this one is built here from empty.
						_ = j.rng.Append(j.b.hashes[k*sha256.Size:(k+1)*sha256.Size], nil)
					}
				}
				close(j.done)
			}
		}()
	}
	go func() {
		defer close(work)
		defer close(pending)
		for ri := range layout.Range(from, total, cp.Size) {
			j := &auditJob{ri: ri, done: make(chan struct{})}
			select {
			case pending <- j:
			case <-ctx.Done():
				return
			}
			select {
			case work <- j:
			case <-ctx.Done():
				close(j.done)
				return
			}
		}
	}()

	var reads []bundleRead // status and digest of each bundle, for classify
	var structural []Problem
	var done uint64
	for j := range pending {
		select {
		case <-j.done:
		case <-ctx.Done():
			return rep, fmt.Errorf("auditing: %w", ctx.Err())
		}
		if err := ctx.Err(); err != nil {
			return rep, fmt.Errorf("auditing: %w", err)
		}
		b := j.b
		if b.err != nil {
			return rep, fmt.Errorf("auditing: %w", b.err)
		}
		for _, p := range j.checks {
			rep.add(p)
		}
		switch b.status {
		case bundleOK:
			if rootable {
				if err := rng.AppendRange(j.rng, nil); err != nil {
					return rep, fmt.Errorf("auditing: merging bundle %d: %w", b.ri.Index, err)
				}
			}
		case bundleShort, bundleMissing:
			rootable = false
			structural = append(structural, Problem{Class: ErrDroppedEntry, Index: b.start + uint64(b.have), Count: uint64(b.ri.N) - uint64(b.have), Detail: b.detail})
		case bundleMalformed:
			rootable = false
			structural = append(structural, Problem{Class: ErrModifiedEntry, Index: b.start, Count: uint64(b.ri.N), Detail: b.detail})
		}
		rep.Entries += uint64(b.have)
		digest := sha256.Sum256(b.hashes)
		reads = append(reads, bundleRead{ri: b.ri, start: b.start, status: b.status, have: b.have, hashes: digest[:]})
		done += uint64(b.ri.N)
		if progress != nil {
			progress(done, total)
		}
	}
	if err := ctx.Err(); err != nil {
		return rep, fmt.Errorf("auditing: %w", err)
	}

	if rootable {
		root, err := rng.GetRootHash(nil)
		if err != nil {
			return rep, fmt.Errorf("auditing: computing root: %w", err)
		}
		if cp.Size == 0 {
			root = rfc6962.DefaultHasher.EmptyRoot()
		}
		rep.Root = root
		rep.RootMatches = bytes.Equal(root, cp.Hash)
	}
	if !rep.RootMatches {
		rep.add(Problem{Class: ErrRootMismatch, Index: from, Count: 1, Detail: fmt.Sprintf("the entries from %d do not hash to the root of checkpoint %d", from, cp.Size)})
		found, note, err := r.classify(ctx, cp, reads)
		if err != nil {
			return rep, fmt.Errorf("auditing: %w", err)
		}
		if note != "" {
			rep.Note = note
		}
		if found == nil {
			rep.Classified = false
			found = structural
		}
		for _, p := range found {
			rep.add(p)
		}
	}
	slices.SortStableFunc(rep.Problems, func(a, b Problem) int {
		switch {
		case a.Index < b.Index:
			return -1
		case a.Index > b.Index:
			return 1
		}
		return 0
	})
	return rep, rep.Err()
}

// classify tells which entries of the audited bundles differ from the ones
// cp commits to, using the level-0 hash tiles as the expected leaves once
// they are shown to hash to cp's root. It returns nil problems and a note
// when it cannot tell.
func (r *Reader) classify(ctx context.Context, cp *Checkpoint, reads []bundleRead) ([]Problem, string, error) {
	// Expected leaves: every level-0 tile of the tree, checked against the root.
	byIndex := make(map[uint64]int, len(reads))
	for i, b := range reads {
		byIndex[b.ri.Index] = i
	}
	tileRng := rangeFactory.NewEmptyRange(0)
	type diff struct {
		read     bundleRead
		expected [][]byte
	}
	var diffs []diff
	for ri := range layout.Range(0, cp.Size, cp.Size) {
		raw, err := r.src.ReadTile(ctx, 0, ri.Index, ri.Partial)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil, fmt.Sprintf("cannot tell which entries changed: hash tile 0/%d is missing", ri.Index), nil
			}
			return nil, "", fmt.Errorf("reading hash tile 0/%d: %w", ri.Index, err)
		}
		var t api.HashTile
		if err := t.UnmarshalText(raw); err != nil || len(t.Nodes) < int(ri.N) {
			return nil, fmt.Sprintf("cannot tell which entries changed: hash tile 0/%d is malformed", ri.Index), nil
		}
		leaves := t.Nodes[:ri.N]
		for _, h := range leaves {
			if err := tileRng.Append(h, nil); err != nil {
				return nil, "", fmt.Errorf("hashing tile 0/%d: %w", ri.Index, err)
			}
		}
		i, ok := byIndex[ri.Index]
		if !ok {
			continue // below from
		}
		b := reads[i]
		exp := leaves[b.ri.First : b.ri.First+b.ri.N]
		if b.status == bundleOK {
			d := sha256.Sum256(bytes.Join(exp, nil))
			if bytes.Equal(d[:], b.hashes) {
				continue
			}
		}
		diffs = append(diffs, diff{read: b, expected: exp})
	}
	root, err := tileRng.GetRootHash(nil)
	if err != nil {
		return nil, "", fmt.Errorf("hashing tiles: %w", err)
	}
	if cp.Size == 0 {
		root = rfc6962.DefaultHasher.EmptyRoot()
	}
	if !bytes.Equal(root, cp.Hash) {
		return nil, "cannot tell which entries changed: the hash tiles were rewritten too and do not match the signed root either", nil
	}
	if len(diffs) == 0 {
		return []Problem{}, "the entries match the signed leaf hashes; the interior tiles used below the audit's start do not", nil
	}

	// Compare the leaves found with the leaves signed, as multisets and in order.
	type leaf struct {
		pos uint64
		h   string
	}
	var expected, got []leaf
	var problems []Problem
	for _, d := range diffs {
		for k, h := range d.expected {
			expected = append(expected, leaf{d.read.start + uint64(k), string(h)})
		}
		if d.read.status == bundleMalformed {
			// Nothing to compare with: the whole bundle is unreadable.
			problems = append(problems, Problem{Class: ErrModifiedEntry, Index: d.read.start, Count: uint64(d.read.ri.N), Detail: fmt.Sprintf("entry bundle %d does not parse", d.read.ri.Index)})
			expected = expected[:len(expected)-len(d.expected)]
			continue
		}
		b := r.readBundle(ctx, d.read.ri, nil, nil)
		if b.err != nil {
			return nil, "", b.err
		}
		for k := 0; k < b.have; k++ {
			got = append(got, leaf{b.start + uint64(k), string(b.hashes[k*sha256.Size : (k+1)*sha256.Size])})
		}
	}
	remaining := make(map[string]int, len(expected))
	firstAt := make(map[string]uint64, len(expected))
	for _, e := range expected {
		remaining[e.h]++
		if _, ok := firstAt[e.h]; !ok {
			firstAt[e.h] = e.pos
		}
	}
	var extra, commonGot []leaf
	for _, g := range got {
		if remaining[g.h] > 0 {
			remaining[g.h]--
			commonGot = append(commonGot, g)
		} else {
			extra = append(extra, g)
		}
	}
	matched := make(map[string]int, len(commonGot))
	for _, g := range commonGot {
		matched[g.h]++
	}
	var commonExp []leaf
	missing := map[uint64]bool{}
	var missingOrder []uint64
	for _, e := range expected {
		if matched[e.h] > 0 {
			matched[e.h]--
			commonExp = append(commonExp, e)
		} else {
			missing[e.pos] = true
			missingOrder = append(missingOrder, e.pos)
		}
	}
	for _, x := range extra {
		if missing[x.pos] {
			delete(missing, x.pos)
			problems = append(problems, Problem{Class: ErrModifiedEntry, Index: x.pos, Count: 1, Detail: "its bytes differ from the signed leaf"})
		} else {
			problems = append(problems, Problem{Class: ErrModifiedEntry, Index: x.pos, Count: 1, Detail: "an entry the checkpoint does not contain"})
		}
	}
	for _, pos := range missingOrder {
		if missing[pos] {
			problems = append(problems, Problem{Class: ErrDroppedEntry, Index: pos, Count: 1, Detail: "the signed entry is absent"})
		}
	}
	for k := range commonGot {
		if commonGot[k].h != commonExp[k].h {
			problems = append(problems, Problem{Class: ErrReorderedEntry, Index: commonGot[k].pos, Count: 1,
				Detail: fmt.Sprintf("holds the entry signed at index %d", firstAt[commonGot[k].h])})
		}
	}
	return problems, "", nil
}
