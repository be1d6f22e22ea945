package billing

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"sync"
	"time"
)

// MaxBuckets bounds the buckets of a Series: the interval is the smallest
// of a minute, an hour and a day that covers the receipts' span in at most
// this many buckets, or a whole number of days beyond.
const MaxBuckets = 240

// Bucket is one interval of a Series: the verified receipts whose time
// falls in [Start, Start+interval), each counted once.
type Bucket struct {
	Start       time.Time `json:"start"`
	Invocations uint64    `json:"invocations"`
	// Failed counts the invocations whose status is not "ok".
	Failed       uint64 `json:"failed"`
	Instructions uint64 `json:"instructions"`
}

// Series is the billed receipts over time, by the time each receipt
// carries (signed by its worker, within its certificate's validity).
type Series struct {
	// Interval names the bucket width: "minute", "hour", "day" or "N days".
	Interval string `json:"interval"`
	// Seconds is the bucket width in seconds.
	Seconds int64 `json:"interval_seconds"`
	// Buckets run from the first receipt's bucket to the last one's, in
	// order, with the empty ones in between; none when nothing was billed.
	Buckets []Bucket `json:"buckets"`
}

// Timeline is an Auditor that also keeps, for Series, each billed
// receipt's time, instructions and status. Its Check is a ledger.CheckFunc
// to pass to the audit instead of the Auditor's, safe for concurrent use.
// It keeps a count per minute and one digest per billed entry (16 bytes),
// as the Auditor does.
type Timeline struct {
	a *Auditor

	mu      sync.Mutex
	counted map[digest]struct{}
	minutes map[int64]*Bucket // by Unix minute
}

// NewTimeline returns a Timeline over a: a's bill is what it was, and
// Series counts the same receipts, each once.
func NewTimeline(a *Auditor) *Timeline {
	return &Timeline{a: a, counted: map[digest]struct{}{}, minutes: map[int64]*Bucket{}}
}

// Check is the Auditor's Check; an entry it billed (not a failure, not a
// duplicate) is also counted in the minute of its receipt's time.
func (t *Timeline) Check(index uint64, entry []byte) error {
	if err := t.a.Check(index, entry); err != nil {
		return err
	}
	// The Auditor verified that the entry is the canonical encoding of a
	// receipt.Signed: it starts with the receipt, in standard base64.
	rest, ok := bytes.CutPrefix(entry, []byte(`{"receipt":"`))
	end := bytes.IndexByte(rest, '"')
	if !ok || end < 0 {
		return fmt.Errorf("%w: no receipt first", ErrNotReceipt)
	}
	body := make([]byte, base64.StdEncoding.DecodedLen(end))
	n, err := base64.StdEncoding.Decode(body, rest[:end])
	if err != nil {
		return fmt.Errorf("%w: %v", ErrNotReceipt, err)
	}
	var rc struct {
		Status   string    `json:"status"`
		Time     time.Time `json:"time"`
		Metering struct {
			Instructions *uint64 `json:"instructions"`
		} `json:"metering"`
	}
	if err := json.Unmarshal(body[:n], &rc); err != nil {
		return fmt.Errorf("%w: %v", ErrNotReceipt, err)
	}
	sum := sha256.Sum256(entry)
	d := digest(sum[:16])
	minute := floorDiv(rc.Time.Unix(), 60)

	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.counted[d]; ok {
		return nil // a duplicate: the Auditor counted it as one
	}
	t.counted[d] = struct{}{}
	b := t.minutes[minute]
	if b == nil {
		b = &Bucket{Start: time.Unix(minute*60, 0).UTC()}
		t.minutes[minute] = b
	}
	b.Invocations++
	if rc.Status != "ok" {
		b.Failed++
	}
	if rc.Metering.Instructions != nil {
		b.Instructions += *rc.Metering.Instructions
	}
	return nil
}

// Series returns the counted receipts in buckets of one interval, chosen
// from their span (see MaxBuckets). Read it once the audit has returned.
func (t *Timeline) Series() Series {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.minutes) == 0 {
		return Series{Interval: "minute", Seconds: 60, Buckets: []Bucket{}}
	}
	first, last := int64(0), int64(0)
	started := false
	for m := range t.minutes {
		if !started || m < first {
			first = m
		}
		if !started || m > last {
			last = m
		}
		started = true
	}
	width, name := interval(first, last)
	start := floorDiv(first, width)
	n := floorDiv(last, width) - start + 1
	out := Series{Interval: name, Seconds: width * 60, Buckets: make([]Bucket, n)}
	for i := range out.Buckets {
		out.Buckets[i].Start = time.Unix((start+int64(i))*width*60, 0).UTC()
	}
	for m, b := range t.minutes {
		o := &out.Buckets[floorDiv(m, width)-start]
		o.Invocations += b.Invocations
		o.Failed += b.Failed
		o.Instructions += b.Instructions
	}
	return out
}

// interval chooses the bucket width, in minutes, for receipts from the
// minute first to the minute last.
func interval(first, last int64) (minutes int64, name string) {
	for _, c := range []struct {
		minutes int64
		name    string
	}{{1, "minute"}, {60, "hour"}, {24 * 60, "day"}} {
		if floorDiv(last, c.minutes)-floorDiv(first, c.minutes)+1 <= MaxBuckets {
			return c.minutes, c.name
		}
	}
	const day = 24 * 60
	days := (floorDiv(last, day) - floorDiv(first, day) + 1 + MaxBuckets - 1) / MaxBuckets
	for floorDiv(last, days*day)-floorDiv(first, days*day)+1 > MaxBuckets {
		days++ // the span's alignment to the width can add a bucket
	}
	return days * day, fmt.Sprintf("%d days", days)
}

// floorDiv is a/b rounded down, for b > 0.
func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && a < 0 {
		q--
	}
	return q
}
