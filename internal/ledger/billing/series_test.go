package billing_test

import (
	"errors"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/cloister-faas/cloister/internal/certs"
	"github.com/cloister-faas/cloister/internal/ledger/billing"
	"github.com/cloister-faas/cloister/internal/tee"
)

func newTimeline() (*billing.Auditor, *billing.Timeline) {
	a := newAuditor()
	return a, billing.NewTimeline(a)
}

// TestTimelineCountsWhatIsBilled: the series of a log with duplicates,
// checked in reverse, counts each receipt once, and the bill is the
// Auditor's own.
func TestTimelineCountsWhatIsBilled(t *testing.T) {
	es := genuine(t, 40)
	// Indices 40..49 repeat entries 0..9.
	log := append(append([][]byte{}, es...), es[:10]...)
	a, tl := newTimeline()
	for i := len(log) - 1; i >= 0; i-- {
		if err := tl.Check(uint64(i), log[i]); err != nil {
			t.Fatalf("Check(%d): %v", i, err)
		}
	}
	wantBill := expectedBill(upTo(40))
	for i, n := range []uint64{4, 3, 3} { // entries 0..9 by function: i%3
		wantBill[i].Duplicates = n
	}
	if got := a.Bill(); !reflect.DeepEqual(got, wantBill) {
		t.Fatalf("bill:\ngot  %+v\nwant %+v", got, wantBill)
	}
	if n, _ := a.Duplicates(); n != 10 {
		t.Errorf("duplicates: got %d, want 10", n)
	}
	s := tl.Series()
	// makeReceipt(i) is at notBefore + i+1 seconds: one minute.
	want := billing.Bucket{Start: notBefore}
	for i := range 40 {
		r := makeReceipt(i)
		want.Invocations++
		if r.Status != "ok" {
			want.Failed++
		}
		want.Instructions += *r.Metering.Instructions
	}
	if s.Interval != "minute" || s.Seconds != 60 || len(s.Buckets) != 1 {
		t.Fatalf("series: got %s (%d s), %d buckets, want minute (60 s), 1 bucket", s.Interval, s.Seconds, len(s.Buckets))
	}
	if got := s.Buckets[0]; !got.Start.Equal(want.Start) || got.Invocations != want.Invocations || got.Failed != want.Failed || got.Instructions != want.Instructions {
		t.Errorf("bucket: got %+v, want %+v", got, want)
	}
}

// TestTimelineSkipsFailures: an entry that does not verify is neither
// billed nor counted, and its error is the Auditor's.
func TestTimelineSkipsFailures(t *testing.T) {
	es := genuine(t, 3)
	bad := append([]byte(nil), es[1]...)
	bad[40] ^= 1 // inside the receipt's base64
	rogue := sign(t, makeReceipt(2), rogueWorkerKey, workerCert(t, rogueCoordKey, pub(rogueWorkerKey)))
	_, tl := newTimeline()
	if err := tl.Check(0, es[0]); err != nil {
		t.Fatal(err)
	}
	for i, e := range [][]byte{bad, rogue, []byte(`{"not":"a receipt"}`)} {
		if err := tl.Check(uint64(i+1), e); err == nil {
			t.Errorf("entry %d: Check passed, want an error", i+1)
		}
	}
	if err := tl.Check(9, []byte("{")); !errors.Is(err, billing.ErrNotReceipt) {
		t.Errorf("a broken entry: got %v, want ErrNotReceipt", err)
	}
	s := tl.Series()
	if len(s.Buckets) != 1 || s.Buckets[0].Invocations != 1 {
		t.Errorf("series: got %+v, want one invocation", s.Buckets)
	}
}

func TestTimelineEmpty(t *testing.T) {
	_, tl := newTimeline()
	s := tl.Series()
	if s.Buckets == nil || len(s.Buckets) != 0 || s.Seconds != 60 {
		t.Errorf("an empty series: got %+v, want no buckets (not null) of a minute", s)
	}
}

// TestTimelineInterval: the interval follows the span, and buckets run
// without gaps from the first receipt's to the last one's.
func TestTimelineInterval(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 12, 0, 30, 0, time.UTC)
	for _, tc := range []struct {
		span     time.Duration
		interval string
		seconds  int64
		buckets  int
		start    time.Time // of the first bucket
	}{
		{0, "minute", 60, 1, t0.Truncate(time.Minute)},
		{179 * time.Minute, "minute", 60, 180, t0.Truncate(time.Minute)},
		{240 * time.Minute, "hour", 3600, 5, t0.Truncate(time.Hour)},
		{239 * time.Hour, "hour", 3600, 240, t0.Truncate(time.Hour)},
		{20 * 24 * time.Hour, "day", 86400, 21, time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)},
		{600 * 24 * time.Hour, "3 days", 3 * 86400, 201, time.Unix(floorTo(t0.Unix(), 3*86400), 0).UTC()},
	} {
		t.Run(tc.interval+"/"+tc.span.String(), func(t *testing.T) {
			t1 := t0.Add(tc.span)
			cert := certFor(t, t0.Add(-time.Hour), t1.Add(time.Hour))
			_, tl := newTimeline()
			for i, at := range []time.Time{t0, t1} {
				r := makeReceipt(i)
				r.Time = at
				if err := tl.Check(uint64(i), sign(t, r, workerKey, cert)); err != nil {
					t.Fatal(err)
				}
			}
			s := tl.Series()
			if s.Interval != tc.interval || s.Seconds != tc.seconds || len(s.Buckets) != tc.buckets {
				t.Fatalf("got %s (%d s) × %d, want %s (%d s) × %d", s.Interval, s.Seconds, len(s.Buckets), tc.interval, tc.seconds, tc.buckets)
			}
			if len(s.Buckets) > billing.MaxBuckets {
				t.Errorf("%d buckets, more than MaxBuckets", len(s.Buckets))
			}
			if !s.Buckets[0].Start.Equal(tc.start) {
				t.Errorf("first bucket at %v, want %v", s.Buckets[0].Start, tc.start)
			}
			var total uint64
			for i, b := range s.Buckets {
				total += b.Invocations
				if want := tc.start.Add(time.Duration(int64(i)*s.Seconds) * time.Second); !b.Start.Equal(want) {
					t.Fatalf("bucket %d at %v, want %v", i, b.Start, want)
				}
			}
			last := s.Buckets[len(s.Buckets)-1]
			if total != 2 || s.Buckets[0].Invocations == 0 || last.Invocations == 0 {
				t.Errorf("got %d invocations, first bucket %d, last %d; want 2, in the first and the last", total, s.Buckets[0].Invocations, last.Invocations)
			}
			if !t0.Before(s.Buckets[0].Start.Add(time.Duration(s.Seconds)*time.Second)) || t1.Before(last.Start) {
				t.Errorf("the receipts' times are not in their buckets")
			}
		})
	}
}

// TestTimelineConcurrent checks from several goroutines, as ledger.Audit
// does, with duplicates racing their originals.
func TestTimelineConcurrent(t *testing.T) {
	es := genuine(t, 60)
	a, tl := newTimeline()
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i, e := range es {
				// Each goroutine checks every entry: index g*60+i.
				if err := tl.Check(uint64(g*len(es)+i), e); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	var total uint64
	for _, b := range tl.Series().Buckets {
		total += b.Invocations
	}
	var billed uint64
	for _, l := range a.Bill() {
		billed += l.Invocations
	}
	if total != 60 || billed != 60 {
		t.Errorf("series counted %d, bill %d; want 60 each", total, billed)
	}
}

func floorTo(sec, width int64) int64 {
	return sec - ((sec%width)+width)%width
}

// certFor certifies the worker key from notBefore to notAfter.
func certFor(t testing.TB, notBefore, notAfter time.Time) certs.Signed {
	t.Helper()
	s, err := certs.Sign(coordKey, certs.DomainWorker, certs.Worker{
		WorkerID: "w-1", SigningKey: pub(workerKey), TEE: tee.KindSim, TCB: "sim-1", Measurement: "ab12",
		NotBefore: notBefore, NotAfter: notAfter,
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// BenchmarkTimelineCheck is BenchmarkCheck's "auditor" with the series
// kept: the difference is what the ledger page's charts cost an audit.
func BenchmarkTimelineCheck(b *testing.B) {
	const n = 4096
	es := genuine(b, n)
	_, tl := newTimeline()
	i := 0
	for b.Loop() {
		if err := tl.Check(uint64(i), es[i%n]); err != nil {
			b.Fatal(err)
		}
		i++
	}
	b.ReportMetric(b.Elapsed().Seconds()/float64(b.N)*1e6, "s/1M-entries")
}
