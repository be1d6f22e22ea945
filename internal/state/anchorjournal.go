package state

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/cloister-faas/cloister/internal/bus"
	"github.com/cloister-faas/cloister/internal/journal"
)

// journalLabel separates the anchor journal's key from those of the other
// journals sealed under the master secret.
const journalLabel = "cloister/v1/journal/anchor"

// openJournal opens the anchor's journal, handing what it reads to apply.
func (a *Anchor) openJournal(ctx context.Context, apply func(seq uint64, rec []byte) error) (*journal.Journal, error) {
	j, err := journal.Open(ctx, journal.Config{JS: a.js, Stream: bus.StreamAnchorJournal, Subject: bus.SubjectAnchorJournal,
		Replicas: a.replicas, Key: a.master, Label: journalLabel, Apply: apply})
	if err != nil {
		return nil, fmt.Errorf("state anchor: %w", err)
	}
	return j, nil
}

// Lead makes a standby the active anchor: it reads the journal to its
// end, moves into it a file log that an earlier version left in Dir (once:
// migrate), and starts serving. Read leases that the previous active
// granted may still run, so writes wait until a lease granted now would
// have run out (as after a restart: recovered).
//
// The caller must hold the coordinators' lease, and the previous active
// must have stopped serving: the journal fences writes, not reads, and a
// record it appends after this catch-up fences this anchor instead
// (Fenced). Lead on a leading anchor does nothing.
func (a *Anchor) Lead(ctx context.Context) error { return a.lead(ctx, true) }

// LeadAfterLeases is Lead for a coordinator that knows every read lease
// the previous leader granted has run out (it took over a lease left
// unrenewed for longer than the previous leader could grant leases, see
// internal/coordinator/lease.go): writes need not wait one lease length.
func (a *Anchor) LeadAfterLeases(ctx context.Context) error { return a.lead(ctx, false) }

func (a *Anchor) lead(ctx context.Context, holdForLeases bool) error {
	a.transition.Lock()
	defer a.transition.Unlock()
	if following, err := a.following(); !following {
		return err
	}
	if _, err := a.journal.CatchUp(ctx); err != nil {
		return fmt.Errorf("state anchor: reading the journal before leading: %w", err)
	}
	if err := a.migrate(ctx); err != nil {
		return err
	}
	return a.startLeading(holdForLeases)
}

// CatchUp applies the records appended to the journal since it last read:
// a standby calls it every few hundred milliseconds, so that Lead has
// little left to read. On a leading anchor (or one without a journal) it
// does nothing: a leader is the journal's one writer, its index ahead of
// the journal by its changes in flight, and it learns of another writer
// when an append is fenced.
func (a *Anchor) CatchUp(ctx context.Context) error {
	a.transition.Lock()
	defer a.transition.Unlock()
	if following, err := a.following(); !following {
		return err
	}
	_, err := a.journal.CatchUp(ctx)
	return err
}

// following reports whether the anchor is a standby, neither leading nor
// stopped (then err says why). a.transition is held, so that it stays one.
func (a *Anchor) following() (_ bool, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return !a.leading && a.halted == nil, a.halted
}

// migrate moves the records of the file log that earlier versions kept in
// Dir into the journal, then renames the file anchor.log.migrated. The
// file's log records are re-encoded (JSON ones too) and packed, in order,
// into as few journal records as journal.MaxRecord allows, the same way
// every time, so that a migration cut short (the journal then holds the
// first of them and nothing else) resumes where it stopped. A journal that
// holds anything else belongs to a deployment that went on without this
// file, which is left alone, with a warning.
func (a *Anchor) migrate(ctx context.Context) error {
	if a.dir == "" {
		return nil
	}
	path := filepath.Join(a.dir, anchorLogName)
	st, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) || err == nil && st.Size() == 0 {
		return nil
	}
	if err != nil {
		return fmt.Errorf("state anchor: %w", err)
	}
	recs, err := readAnchorLog(a.dir, a.master, a.log)
	if err != nil {
		return fmt.Errorf("state anchor: reading %s to move it into the journal: %w", path, err)
	}
	done, err := a.migrated(ctx, recs)
	if err != nil {
		return err
	}
	if done < 0 {
		a.log.Warn("state anchor: the journal already holds other records; the file log is not moved into it", "file", path)
		return nil
	}
	for _, rec := range recs[done:] {
		if _, err := a.journal.Append(ctx, rec); err != nil {
			return fmt.Errorf("state anchor: moving %s into the journal: %w", path, err)
		}
		if err := a.applyRecord(rec); err != nil {
			return err
		}
	}
	if err := os.Rename(path, path+".migrated"); err != nil {
		return fmt.Errorf("state anchor: %w", err)
	}
	a.log.Info("state anchor: moved the file log into the journal", "records", len(recs), "resumed_after", done)
	return nil
}

// migrated returns how many of recs the journal holds already, as all its
// records (a migration cut short), or -1 if it holds anything else.
func (a *Anchor) migrated(ctx context.Context, recs [][]byte) (int, error) {
	if n, _ := a.journal.Position(); n == 0 {
		return 0, nil
	} else if n > uint64(len(recs)) {
		return -1, nil
	}
	// The index does not keep the records: read them again.
	var have [][]byte
	j, err := a.openJournal(ctx, func(_ uint64, rec []byte) error {
		have = append(have, rec)
		return nil
	})
	if err != nil {
		return 0, err
	}
	if _, err := j.CatchUp(ctx); err != nil {
		return 0, fmt.Errorf("state anchor: %w", err)
	}
	if len(have) > len(recs) {
		return -1, nil
	}
	for i := range have {
		if !bytes.Equal(have[i], recs[i]) {
			return -1, nil
		}
	}
	return len(have), nil
}

// readAnchorLog reads the file log in dir as journal records (migrate).
func readAnchorLog(dir string, master []byte, log *slog.Logger) ([][]byte, error) {
	var out [][]byte
	var cur []byte
	l, err := openAnchorLog(dir, master, func(pt []byte) error {
		recs, err := decodeLogRecords(pt)
		if err != nil {
			return err
		}
		for _, r := range recs {
			b, err := appendLogRecord(nil, r.Function, r.Changes)
			if err != nil {
				return err
			}
			if len(cur) > 0 && len(cur)+len(b) > journal.MaxRecord {
				out, cur = append(out, cur), nil
			}
			cur = append(cur, b...)
		}
		return nil
	}, log)
	if err != nil {
		return nil, err
	}
	if len(cur) > 0 {
		out = append(out, cur)
	}
	return out, l.close()
}
