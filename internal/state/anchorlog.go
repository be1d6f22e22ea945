package state

import (
	"bufio"
	"context"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/cloister-faas/cloister/internal/seal"
)

// change is one key's new entry (nil: the key had none, used for undo).
type change struct {
	Key   []byte `json:"k"`
	Entry *entry `json:"e"`
}

// logRecord is the plaintext of one log record.
type logRecord struct {
	Function string   `json:"f"`
	Changes  []change `json:"c"`
}

// anchorLog is the anchor's log in a file (anchor.log in
// AnchorConfig.Dir), the anchorStore of an anchor without a journal. Each
// record is
//
//	length (4, big endian) ‖ nonce (12) ‖ AES-GCM(logKey, plaintext,
//	    AAD = "cloister/v1/state-anchor-log" ‖ sequence (8) ‖ sha256 of the previous record)
//
// so that records cannot be altered, reordered, dropped from the middle or
// moved from another log; the plaintext is one or more log records
// (appendLogRecord). A torn record at the end (a crash during a write) is
// cut off when the log is opened. Records are written with one write each
// and the file is synced on close: like JetStream's file store by default,
// it survives a process crash but not necessarily a power loss.
type anchorLog struct {
	f    *os.File
	aead cipher.AEAD
	seq  uint64
	prev [32]byte
	off  int64 // end of the last good record
}

const maxLogRecord = 64 << 20

// anchorLogName is the file log's name in AnchorConfig.Dir.
const anchorLogName = "anchor.log"

func logAAD(seq uint64, prev [32]byte) []byte {
	b := []byte("cloister/v1/state-anchor-log")
	b = binary.BigEndian.AppendUint64(b, seq)
	return append(b, prev[:]...)
}

// openAnchorLog opens (or creates) the log in dir and hands each record's
// plaintext to replay, in order.
func openAnchorLog(dir string, master []byte, replay func(pt []byte) error, log *slog.Logger) (*anchorLog, error) {
	g, err := seal.DeriveAEAD(master, "cloister/v1/state-anchor-log")
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating state anchor dir: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, anchorLogName), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening state anchor log: %w", err)
	}
	l := &anchorLog{f: f, aead: g}
	good, err := l.replay(replay)
	if err != nil {
		_ = f.Close() // no record was written yet; the error below is the one to return
		return nil, err
	}
	end, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		_ = f.Close() // no record was written yet; the error below is the one to return
		return nil, err
	}
	if good < end {
		log.Warn("state anchor log: cutting off an incomplete or unreadable tail", "offset", good, "size", end)
		if err := f.Truncate(good); err != nil {
			_ = f.Close() // no record was written yet; the error below is the one to return
			return nil, fmt.Errorf("truncating state anchor log: %w", err)
		}
	}
	if _, err := f.Seek(good, io.SeekStart); err != nil {
		_ = f.Close() // no record was written yet; the error below is the one to return
		return nil, err
	}
	l.off = good
	return l, nil
}

// replay reads every valid record and returns the offset after the last.
func (l *anchorLog) replay(apply func(pt []byte) error) (int64, error) {
	r := bufio.NewReaderSize(l.f, 1<<20)
	var off int64
	var hdr [4]byte
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return off, nil
		}
		n := binary.BigEndian.Uint32(hdr[:])
		if n < nonceSize+uint32(l.aead.Overhead()) || n > maxLogRecord {
			return off, nil
		}
		body := make([]byte, n)
		if _, err := io.ReadFull(r, body); err != nil {
			return off, nil
		}
		pt, err := l.aead.Open(nil, body[:nonceSize], body[nonceSize:], logAAD(l.seq, l.prev))
		if err != nil {
			return off, nil
		}
		if err := apply(pt); err != nil {
			return 0, fmt.Errorf("state anchor log: record %d: %w", l.seq, err)
		}
		h := sha256.New()
		h.Write(hdr[:])
		h.Write(body)
		h.Sum(l.prev[:0])
		l.seq++
		off += 4 + int64(n)
	}
}

// append writes pt as the next record. On an error nothing was written,
// unless the error says that cutting off the partial record failed too.
func (l *anchorLog) append(_ context.Context, pt []byte) error {
	if l.f == nil {
		return ErrClosed
	}
	buf := make([]byte, 4+nonceSize, 4+nonceSize+len(pt)+l.aead.Overhead())
	rand.Read(buf[4 : 4+nonceSize])
	buf = l.aead.Seal(buf, buf[4:4+nonceSize], pt, logAAD(l.seq, l.prev))
	if len(buf)-4 > maxLogRecord {
		return errors.New("state anchor log record too large")
	}
	binary.BigEndian.PutUint32(buf, uint32(len(buf)-4))
	if _, err := l.f.Write(buf); err != nil {
		// Leave no partial record behind for later ones to follow.
		terr := l.f.Truncate(l.off)
		if terr == nil {
			_, terr = l.f.Seek(l.off, io.SeekStart)
		}
		if terr != nil {
			return errors.Join(err, fmt.Errorf("state anchor log: cutting off the partial record: %w", terr))
		}
		return err
	}
	l.off += int64(len(buf))
	l.prev = sha256.Sum256(buf)
	l.seq++
	return nil
}

// catchUp has nothing to read: only this anchor writes its file.
func (l *anchorLog) catchUp(context.Context) error { return nil }

func (l *anchorLog) close() error {
	if l.f == nil {
		return nil
	}
	err := l.f.Sync()
	if cerr := l.f.Close(); err == nil {
		err = cerr
	}
	l.f = nil
	return err
}

// A log record is binary (it used to be JSON, which replay still reads: a
// JSON record starts with '{'):
//
//	0xC1 ‖ function ‖ count ‖ count × (key ‖ has entry (1) ‖ [version ‖ rev ‖ digest ‖ size ‖ deleted (1)])
//
// with the integers and lengths as uvarints, as in the anchor protocol
// (codec.go), and the same strict decoding. One request's changes make one
// log record; a record of the file log or the journal holds one or more,
// concatenated (group commit, anchorcommit.go), or one JSON record.
const (
	tagLogRecord = 0xC1
	// maxFunctionID bounds a record's function ("namespace/name").
	maxFunctionID = 256
)

func appendLogRecord(b []byte, fn string, changes []change) ([]byte, error) {
	if len(fn) > maxFunctionID {
		return nil, errMalformed
	}
	b = append(b, tagLogRecord)
	b = appendBytes(b, []byte(fn))
	b = binary.AppendUvarint(b, uint64(len(changes)))
	for _, c := range changes {
		if len(c.Key) > MaxKeyBytes {
			return nil, errMalformed
		}
		b = appendBytes(b, c.Key)
		e := c.Entry
		b = appendBool(b, e != nil)
		if e == nil {
			continue
		}
		var err error
		if b, err = appendEntry(b, e); err != nil {
			return nil, err
		}
		b = appendBool(b, e.Deleted)
	}
	return b, nil
}

// decodeLogRecords decodes a record's plaintext: one JSON log record, or
// one or more binary ones.
func decodeLogRecords(pt []byte) ([]logRecord, error) {
	if len(pt) > 0 && pt[0] == '{' {
		var rec logRecord
		if err := json.Unmarshal(pt, &rec); err != nil {
			return nil, err
		}
		return []logRecord{rec}, nil
	}
	if len(pt) == 0 {
		return nil, errMalformed
	}
	var recs []logRecord
	for d := (decoder{b: pt}); len(d.b) > 0; {
		rec, err := d.logRecord()
		if err != nil {
			return nil, err
		}
		recs = append(recs, rec)
	}
	return recs, nil
}

// logRecord decodes one binary log record.
func (d *decoder) logRecord() (logRecord, error) {
	var rec logRecord
	if d.byte() != tagLogRecord {
		return rec, errMalformed
	}
	rec.Function = string(d.bytes(maxFunctionID))
	n := d.count(maxBatch)
	if d.err != nil || n > len(d.b)/2 {
		return rec, errMalformed
	}
	rec.Changes = make([]change, n)
	for i := range rec.Changes {
		c := &rec.Changes[i]
		c.Key = d.bytes(MaxKeyBytes)
		if d.bool() {
			c.Entry = d.entry()
			c.Entry.Deleted = d.bool()
		}
		if d.err != nil {
			return rec, errMalformed
		}
	}
	return rec, nil
}
