package billing_test

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/cloister-faas/cloister/internal/certs"
	"github.com/cloister-faas/cloister/internal/ledger/billing"
	"github.com/cloister-faas/cloister/internal/receipt"
	"github.com/cloister-faas/cloister/internal/tee"
)

func key(seed byte) ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize))
}

func pub(k ed25519.PrivateKey) ed25519.PublicKey { return k.Public().(ed25519.PublicKey) }

// Keys: the attested coordinator, the worker it admitted, and a coordinator
// and worker nobody admitted.
var (
	coordKey       = key(1)
	workerKey      = key(10)
	rogueCoordKey  = key(66)
	rogueWorkerKey = key(67)
)

var (
	notBefore = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	notAfter  = notBefore.Add(24 * time.Hour)
)

// workerCert certifies signing as worker "w-1" (sim TEE), signed by by.
func workerCert(t testing.TB, by ed25519.PrivateKey, signing ed25519.PublicKey) certs.Signed {
	t.Helper()
	s, err := certs.Sign(by, certs.DomainWorker, certs.Worker{
		WorkerID:    "w-1",
		SigningKey:  signing,
		TEE:         tee.KindSim,
		TCB:         "sim-1",
		Measurement: "ab12",
		NotBefore:   notBefore,
		NotAfter:    notAfter,
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func u64(v uint64) *uint64 { return &v }
func u32(v uint32) *uint32 { return &v }
func i64(v int64) *int64   { return &v }

// functions are the namespace/function pairs receipts are spread over.
var functions = [][2]string{{"acme", "hello"}, {"acme", "resize"}, {"globex", "hello"}}

// makeReceipt is the i-th invocation of a test log: metering that differs
// from one receipt to the next, every seventh one failed, and every fifth
// one without a CPU time (not measured).
func makeReceipt(i int) *receipt.Receipt {
	f := functions[i%len(functions)]
	r := &receipt.Receipt{
		Version:         receipt.Version,
		InvocationID:    fmt.Sprintf("inv-%05d", i),
		Namespace:       f[0],
		Function:        f[1],
		FunctionVersion: 1,
		CodeHash:        "c0de",
		BundleHash:      "b0b0",
		Mode:            "hpke",
		RequestHash:     fmt.Sprintf("req-%d", i),
		ResponseHash:    fmt.Sprintf("resp-%d", i),
		Status:          "ok",
		Metering: receipt.Metering{
			Instructions:    u64(uint64(1000 + 37*i)),
			FuelLimit:       u64(1 << 30),
			PeakMemoryPages: u32(uint32(17 + i%50)),
			WallNanos:       i64(int64(50_000 + 11*i)),
			CPUNanos:        i64(int64(40_000 + 7*i)),
			InputBytes:      i64(int64(100 + i)),
			OutputBytes:     i64(int64(200 + 3*i)),
		},
		TEE:      receipt.TEE{Kind: tee.KindSim, TCB: "sim-1", Measurement: "ab12"},
		WorkerID: "w-1",
		Time:     notBefore.Add(time.Duration(i+1) * time.Second),
	}
	if i%7 == 3 {
		r.Status = "trap"
	}
	if i%5 == 4 {
		r.Metering.CPUNanos = nil
	}
	return r
}

// sign returns the ledger entry of r signed with key under cert.
func sign(t testing.TB, r *receipt.Receipt, key ed25519.PrivateKey, cert certs.Signed) []byte {
	t.Helper()
	s, err := receipt.Sign(r, key, cert)
	if err != nil {
		t.Fatal(err)
	}
	e, err := s.Entry()
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// genuine returns n entries signed by the admitted worker.
func genuine(t testing.TB, n int) [][]byte {
	t.Helper()
	cert := workerCert(t, coordKey, pub(workerKey))
	es := make([][]byte, n)
	for i := range es {
		es[i] = sign(t, makeReceipt(i), workerKey, cert)
	}
	return es
}

// expectedBill sums makeReceipt(i) for the indices in include, written out
// independently of the package.
func expectedBill(include []int) []billing.Line {
	byFn := map[[2]string]*billing.Line{}
	for _, i := range include {
		r := makeReceipt(i)
		k := [2]string{r.Namespace, r.Function}
		l := byFn[k]
		if l == nil {
			l = &billing.Line{Namespace: r.Namespace, Function: r.Function}
			byFn[k] = l
		}
		l.Invocations++
		if r.Status != "ok" {
			l.Failed++
		}
		l.Instructions += *r.Metering.Instructions
		l.WallNanos += *r.Metering.WallNanos
		if r.Metering.CPUNanos != nil {
			l.CPUNanos += *r.Metering.CPUNanos
		}
		l.InputBytes += *r.Metering.InputBytes
		l.OutputBytes += *r.Metering.OutputBytes
		l.PeakPages = max(l.PeakPages, *r.Metering.PeakMemoryPages)
	}
	var out []billing.Line
	for _, f := range [][2]string{{"acme", "hello"}, {"acme", "resize"}, {"globex", "hello"}} { // sorted
		if l := byFn[f]; l != nil {
			out = append(out, *l)
		}
	}
	return out
}

func upTo(n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = i
	}
	return s
}

func without(s []int, drop ...int) []int {
	var out []int
outer:
	for _, v := range s {
		for _, d := range drop {
			if v == d {
				continue outer
			}
		}
		out = append(out, v)
	}
	return out
}

func newAuditor() *billing.Auditor {
	return billing.NewAuditor(receipt.NewVerifier(pub(coordKey)))
}

func TestBill(t *testing.T) {
	es := genuine(t, 40)
	a := newAuditor()
	for i, e := range es {
		if err := a.Check(uint64(i), e); err != nil {
			t.Fatalf("Check(%d): %v", i, err)
		}
	}
	if got, want := a.Bill(), expectedBill(upTo(40)); !reflect.DeepEqual(got, want) {
		t.Fatalf("bill:\ngot  %+v\nwant %+v", got, want)
	}
	if n, d := a.Duplicates(); n != 0 || len(d) != 0 {
		t.Fatalf("duplicates: got %d %v, want none", n, d)
	}
}

func TestCheckRefuses(t *testing.T) {
	cert := workerCert(t, coordKey, pub(workerKey))
	good := sign(t, makeReceipt(1), workerKey, cert)
	var s receipt.Signed
	if err := json.Unmarshal(good, &s); err != nil {
		t.Fatal(err)
	}
	entry := func(mut func(s *receipt.Signed)) []byte {
		c := s
		c.Receipt = bytes.Clone(s.Receipt)
		mut(&c)
		e, err := c.Entry()
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	// A receipt whose body is valid JSON but not canonical, signed anyway.
	body := append(bytes.Clone(s.Receipt[:len(s.Receipt)-1]), ' ', '}')
	nonCanonBody := receipt.Signed{Receipt: body, Signature: ed25519.Sign(workerKey, append([]byte("cloister-receipt-v1\n"), body...)), WorkerCert: cert}
	nonCanon, _ := nonCanonBody.Entry()
	otherWorker := makeReceipt(1)
	otherWorker.WorkerID = "w-2"

	for _, tc := range []struct {
		name  string
		entry []byte
		want  error
	}{
		{"not JSON", []byte("forged receipt"), billing.ErrNotReceipt},
		{"empty", nil, billing.ErrNotReceipt},
		{"unknown field", append(bytes.Clone(good[:len(good)-1]), `,"extra":1}`...), billing.ErrNotReceipt},
		{"trailing data", append(bytes.Clone(good), ' ', '{', '}'), billing.ErrNotReceipt},
		{"not the canonical entry", append([]byte(" "), good...), billing.ErrNotReceipt},
		{"receipt body not canonical", nonCanon, receipt.ErrMalformed},
		{"certificate from another coordinator", sign(t, makeReceipt(1), rogueWorkerKey, workerCert(t, rogueCoordKey, pub(rogueWorkerKey))), receipt.ErrChain},
		{"signed by a key the certificate does not name", sign(t, makeReceipt(1), rogueWorkerKey, cert), receipt.ErrSignature},
		{"body altered", entry(func(s *receipt.Signed) {
			s.Receipt = bytes.Replace(s.Receipt, []byte(`"input_bytes":101`), []byte(`"input_bytes":9`), 1)
		}), receipt.ErrSignature},
		{"signature altered", entry(func(s *receipt.Signed) { s.Signature = bytes.Clone(s.Signature); s.Signature[0] ^= 1 }), receipt.ErrSignature},
		{"worker differs from the certificate", sign(t, otherWorker, workerKey, cert), receipt.ErrMismatch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newAuditor()
			if err := a.Check(3, tc.entry); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if b := a.Bill(); len(b) != 0 {
				t.Fatalf("a refused entry was billed: %+v", b)
			}
		})
	}
}

// TestDuplicatesConcurrent checks every entry twice, from many goroutines
// in random order as ledger.Audit does: each receipt is billed once, and
// each duplicate is reported against the lower index.
func TestDuplicatesConcurrent(t *testing.T) {
	const n = 300
	es := genuine(t, n)
	type job struct {
		index uint64
		entry []byte
	}
	var jobs []job
	for i, e := range es {
		jobs = append(jobs, job{uint64(i), e}, job{uint64(n + i), e})
	}
	rand.New(rand.NewPCG(1, 2)).Shuffle(len(jobs), func(i, j int) { jobs[i], jobs[j] = jobs[j], jobs[i] })
	a := newAuditor()
	ch := make(chan job)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for j := range ch {
				if err := a.Check(j.index, j.entry); err != nil {
					t.Errorf("Check(%d): %v", j.index, err)
				}
			}
		})
	}
	for _, j := range jobs {
		ch <- j
	}
	close(ch)
	wg.Wait()

	want := expectedBill(upTo(n))
	for i := range want {
		want[i].Duplicates = want[i].Invocations
	}
	if got := a.Bill(); !reflect.DeepEqual(got, want) {
		t.Fatalf("bill:\ngot  %+v\nwant %+v", got, want)
	}
	count, dups := a.Duplicates()
	if count != n || len(dups) != n {
		t.Fatalf("duplicates: got %d (%d listed), want %d", count, len(dups), n)
	}
	for i, d := range dups {
		if d.Index != uint64(n+i) || d.First != uint64(i) {
			t.Fatalf("duplicate %d: got %+v, want {Index:%d First:%d}", i, d, n+i, i)
		}
	}
}

func TestDuplicatesListBounded(t *testing.T) {
	es := genuine(t, 1)
	a := newAuditor()
	const n = billing.MaxDuplicates + 10
	for i := n; i >= 0; i-- { // highest index first
		if err := a.Check(uint64(i), es[0]); err != nil {
			t.Fatal(err)
		}
	}
	count, dups := a.Duplicates()
	if count != n || len(dups) != billing.MaxDuplicates {
		t.Fatalf("got %d duplicates, %d listed; want %d, %d", count, len(dups), n, billing.MaxDuplicates)
	}
	for _, d := range dups {
		if d.First != 0 || d.Index == 0 {
			t.Fatalf("got %+v, want a duplicate of index 0", d)
		}
	}
	if b := a.Bill(); len(b) != 1 || b[0].Invocations != 1 || b[0].Duplicates != n {
		t.Fatalf("bill: got %+v, want 1 invocation, %d duplicates", b, n)
	}
}

// FuzzCheck: Check never panics, and an entry it accepts is billed once
// (or counted once as a duplicate) and is the canonical encoding of a
// receipt that verifies.
func FuzzCheck(f *testing.F) {
	for _, e := range genuine(f, 3) {
		f.Add(e)
	}
	f.Add(sign(f, makeReceipt(1), rogueWorkerKey, workerCert(f, rogueCoordKey, pub(rogueWorkerKey))))
	f.Add([]byte(`{"receipt":"","sig":"","worker_cert":{"body":"","sig":""}}`))
	v := receipt.NewVerifier(pub(coordKey))
	f.Fuzz(func(t *testing.T, entry []byte) {
		a := billing.NewAuditor(v)
		err := a.Check(0, entry)
		dupErr := a.Check(1, entry)
		if (err == nil) != (dupErr == nil) {
			t.Fatalf("the same entry checked twice: %v, then %v", err, dupErr)
		}
		bill := a.Bill()
		if err != nil {
			if len(bill) != 0 {
				t.Fatalf("refused (%v) but billed: %+v", err, bill)
			}
			return
		}
		if len(bill) != 1 || bill[0].Invocations != 1 || bill[0].Duplicates != 1 {
			t.Fatalf("accepted: got bill %+v, want one invocation and one duplicate", bill)
		}
		var s receipt.Signed
		if err := json.Unmarshal(entry, &s); err != nil {
			t.Fatal(err)
		}
		if e, _ := s.Entry(); !bytes.Equal(e, entry) {
			t.Fatalf("accepted a non-canonical entry %q", entry)
		}
		if _, err := receipt.Verify(&s, pub(coordKey), receipt.Expect{}); err != nil {
			t.Fatalf("accepted an entry that does not verify: %v", err)
		}
	})
}

// TestPerCaller: a bill per caller splits each function's line by the
// caller its receipts name, anonymous calls apart; the default bill sums
// all callers.
func TestPerCaller(t *testing.T) {
	cert := workerCert(t, coordKey, pub(workerKey))
	callers := []string{"", certs.CallerHash(pub(key(20))), certs.CallerHash(pub(key(21)))}
	var entries [][]byte
	want := map[[2]string]uint64{}
	for i := range 30 {
		r := makeReceipt(i)
		r.Namespace, r.Function, r.Caller = "acme", "hello", callers[i%3]
		entries = append(entries, sign(t, r, workerKey, cert))
		want[[2]string{"hello", r.Caller}]++
	}
	per := billing.NewAuditor(receipt.NewVerifier(pub(coordKey)))
	per.PerCaller()
	all := billing.NewAuditor(receipt.NewVerifier(pub(coordKey)))
	for i, e := range entries {
		if err := per.Check(uint64(i), e); err != nil {
			t.Fatal(err)
		}
		if err := all.Check(uint64(i), e); err != nil {
			t.Fatal(err)
		}
	}
	lines := per.Bill()
	if len(lines) != 3 {
		t.Fatalf("%d lines per caller, want 3: %+v", len(lines), lines)
	}
	for _, l := range lines {
		if l.Invocations != want[[2]string{l.Function, l.Caller}] || l.Invocations != 10 {
			t.Errorf("caller %q: %d invocations, want 10", l.Caller, l.Invocations)
		}
	}
	if l := all.Bill(); len(l) != 1 || l[0].Invocations != 30 || l[0].Caller != "" {
		t.Fatalf("the bill of all callers: %+v", l)
	}
}
