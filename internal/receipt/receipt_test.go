package receipt_test

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/cloister-faas/cloister/internal/certs"
	"github.com/cloister-faas/cloister/internal/receipt"
	"github.com/cloister-faas/cloister/internal/tee"
)

// receiptDomain is the signature domain of receipts. It is part of the
// format: changing it invalidates every receipt ever issued.
const receiptDomain = "cloister-receipt-v1\n"

var (
	notBefore = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	notAfter  = notBefore.Add(24 * time.Hour)
	madeAt    = notBefore.Add(time.Hour)
)

func key(seed byte) ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize))
}

func pub(seed byte) ed25519.PublicKey { return key(seed).Public().(ed25519.PublicKey) }

// Keys: the coordinator is seed 1, the worker seed 10.
var (
	coordinator = key(1)
	workerKey   = key(10)
)

func workerCert() certs.Worker {
	return certs.Worker{
		WorkerID:    "w-1",
		SigningKey:  pub(10),
		TEE:         tee.KindSim,
		TCB:         "sim-1",
		Measurement: "ab12",
		NotBefore:   notBefore,
		NotAfter:    notAfter,
	}
}

func issue(t *testing.T, by ed25519.PrivateKey, w certs.Worker) certs.Signed {
	t.Helper()
	s, err := certs.Sign(by, certs.DomainWorker, w)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func u64(v uint64) *uint64 { return &v }
func i64(v int64) *int64   { return &v }

func testReceipt() *receipt.Receipt {
	return &receipt.Receipt{
		Version:         receipt.Version,
		InvocationID:    "inv-1",
		Namespace:       "acme",
		Function:        "hello",
		FunctionVersion: 2,
		CodeHash:        "c0de",
		BundleHash:      "b0b0",
		Mode:            "sealed",
		RequestHash:     "5eq",
		ResponseHash:    "5e5p",
		Status:          "ok",
		Metering: receipt.Metering{
			WallNanos:  i64(1500),
			InputBytes: i64(12),
			HostCalls:  map[string]uint64{"random_get": 1, "clock_time_get": 2},
		},
		TEE:      receipt.TEE{Kind: tee.KindSim, TCB: "sim-1", Measurement: "ab12"},
		WorkerID: "w-1",
		Time:     madeAt,
	}
}

func expect() receipt.Expect {
	return receipt.Expect{
		Namespace:    "acme",
		Function:     "hello",
		Version:      2,
		CodeHash:     "c0de",
		RequestHash:  "5eq",
		ResponseHash: "5e5p",
	}
}

func signReceipt(t *testing.T, r *receipt.Receipt) *receipt.Signed {
	t.Helper()
	s, err := receipt.Sign(r, workerKey, issue(t, coordinator, workerCert()))
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	return s
}

// resign replaces the receipt bytes and signs them correctly with the worker
// key, so only the property under test can make Verify fail.
func resign(s *receipt.Signed, body []byte) *receipt.Signed {
	return &receipt.Signed{
		Receipt:    body,
		Signature:  ed25519.Sign(workerKey, append([]byte(receiptDomain), body...)),
		WorkerCert: s.WorkerCert,
	}
}

func TestSignVerifyRoundTrip(t *testing.T) {
	want := testReceipt()
	s := signReceipt(t, want)
	v, err := receipt.Verify(s, pub(1), expect())
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if !reflect.DeepEqual(v.Receipt, want) {
		t.Errorf("got receipt %+v, want %+v", v.Receipt, want)
	}
	if v.Worker.WorkerID != "w-1" || !v.Worker.SigningKey.Equal(pub(10)) {
		t.Errorf("got worker %+v, want w-1 with the worker key", v.Worker)
	}
	// Nothing is checked against an empty Expect but the chain.
	if _, err := receipt.Verify(s, pub(1), receipt.Expect{}); err != nil {
		t.Errorf("empty Expect: got %v, want nil", err)
	}
}

// TestVerifyOlderWorkerCert: receipts logged before worker certificates
// named the key-exchange key by its hash carry certificates with the key
// itself ("kex_key"); they still verify (docs/adr/0024-worker-cert-kex-hash.md).
func TestVerifyOlderWorkerCert(t *testing.T) {
	w := workerCert()
	body, err := json.Marshal(w)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatal(err)
	}
	delete(m, "kex_key_sha256")
	m["kex_key"] = bytes.Repeat([]byte{7}, 1216)
	old, _ := json.Marshal(m)
	cert := certs.Signed{Body: old, Signature: ed25519.Sign(coordinator, append([]byte(certs.DomainWorker), old...))}
	s, err := receipt.Sign(testReceipt(), workerKey, cert)
	if err != nil {
		t.Fatal(err)
	}
	if v, err := receipt.Verify(s, pub(1), expect()); err != nil || v.Worker.WorkerID != "w-1" {
		t.Fatalf("a receipt with an older worker certificate: %+v, %v", v, err)
	}
}

func TestSignedJSONRoundTrip(t *testing.T) {
	s := signReceipt(t, testReceipt())
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var back receipt.Signed
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if _, err := receipt.Verify(&back, pub(1), expect()); err != nil {
		t.Errorf("got %v, want nil", err)
	}
}

func TestSignatureDomain(t *testing.T) {
	s := signReceipt(t, testReceipt())
	if !ed25519.Verify(pub(10), append([]byte(receiptDomain), s.Receipt...), s.Signature) {
		t.Errorf("signature does not verify under domain %q", receiptDomain)
	}
	if ed25519.Verify(pub(10), s.Receipt, s.Signature) {
		t.Error("signature verifies without a domain, want it bound to one")
	}
}

func TestVerifyExpectMismatch(t *testing.T) {
	s := signReceipt(t, testReceipt())
	tests := []struct {
		name   string
		modify func(*receipt.Expect)
	}{
		{"namespace", func(e *receipt.Expect) { e.Namespace = "other" }},
		{"function", func(e *receipt.Expect) { e.Function = "other" }},
		{"version", func(e *receipt.Expect) { e.Version = 3 }},
		{"code hash", func(e *receipt.Expect) { e.CodeHash = "c0dd" }},
		{"request hash", func(e *receipt.Expect) { e.RequestHash = "other" }},
		{"response hash", func(e *receipt.Expect) { e.ResponseHash = "other" }},
		{"case differs", func(e *receipt.Expect) { e.Function = "Hello" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			exp := expect()
			tt.modify(&exp)
			v, err := receipt.Verify(s, pub(1), exp)
			if !errors.Is(err, receipt.ErrMismatch) {
				t.Errorf("got %v, want %v", err, receipt.ErrMismatch)
			}
			if v != nil {
				t.Errorf("got %+v, want nil", v)
			}
		})
	}
}

func TestVerifyRefused(t *testing.T) {
	s := signReceipt(t, testReceipt())
	other := func(modify func(*receipt.Receipt)) *receipt.Signed {
		r := testReceipt()
		modify(r)
		b, err := receipt.Encode(r)
		if err != nil {
			t.Fatal(err)
		}
		return resign(s, b)
	}
	withCert := func(by ed25519.PrivateKey, modify func(*certs.Worker)) *receipt.Signed {
		w := workerCert()
		modify(&w)
		c := *s
		c.WorkerCert = issue(t, by, w)
		return &c
	}
	flipped := *s
	flipped.Receipt = bytes.Clone(s.Receipt)
	flipped.Receipt[bytes.Index(flipped.Receipt, []byte("hello"))] ^= 0x20 // "Hello"
	flippedSig := *s
	flippedSig.Signature = bytes.Clone(s.Signature)
	flippedSig.Signature[0] ^= 0x01
	otherWorker := *s
	otherWorker.Signature = ed25519.Sign(key(11), append([]byte(receiptDomain), s.Receipt...))
	noDomain := *s
	noDomain.Signature = ed25519.Sign(workerKey, s.Receipt)

	indented := func() []byte {
		var buf bytes.Buffer
		if err := json.Indent(&buf, s.Receipt, "", "  "); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}()
	reordered := func() []byte {
		var m map[string]json.RawMessage
		if err := json.Unmarshal(s.Receipt, &m); err != nil {
			t.Fatal(err)
		}
		b, err := json.Marshal(m) // keys sorted, not in declaration order
		if err != nil {
			t.Fatal(err)
		}
		return b
	}()
	withField := func(field string) []byte {
		return append([]byte(`{`+field+`,`), s.Receipt[1:]...)
	}

	tests := []struct {
		name string
		s    *receipt.Signed
		want []error
	}{
		{"nil", nil, []error{receipt.ErrMalformed}},
		{"flipped receipt byte", &flipped, []error{receipt.ErrSignature}},
		{"flipped signature byte", &flippedSig, []error{receipt.ErrSignature}},
		{"signed by another worker key", &otherWorker, []error{receipt.ErrSignature}},
		{"signed without domain", &noDomain, []error{receipt.ErrSignature}},
		{"re-signed with whitespace", resign(s, indented), []error{receipt.ErrMalformed}},
		{"re-signed with trailing newline", resign(s, append(bytes.Clone(s.Receipt), '\n')), []error{receipt.ErrMalformed}},
		{"re-signed with sorted keys", resign(s, reordered), []error{receipt.ErrMalformed}},
		{"re-signed with two values", resign(s, append(bytes.Clone(s.Receipt), s.Receipt...)), []error{receipt.ErrMalformed}},
		{"re-signed with unknown field", resign(s, withField(`"plaintext":"secret"`)), []error{receipt.ErrMalformed}},
		{"re-signed not json", resign(s, []byte("receipt")), []error{receipt.ErrMalformed}},
		{"re-signed empty", resign(s, nil), []error{receipt.ErrMalformed}},
		{"version 2", other(func(r *receipt.Receipt) { r.Version = 2 }), []error{receipt.ErrMalformed}},
		{"version 0", other(func(r *receipt.Receipt) { r.Version = 0 }), []error{receipt.ErrMalformed}},
		{"cert from another coordinator", withCert(key(2), func(*certs.Worker) {}), []error{receipt.ErrChain, certs.ErrSignature}},
		{"cert signed as function cert", func() *receipt.Signed {
			c := *s
			var err error
			if c.WorkerCert, err = certs.Sign(coordinator, certs.DomainFunction, workerCert()); err != nil {
				t.Fatal(err)
			}
			return &c
		}(), []error{receipt.ErrChain, certs.ErrSignature}},
		{"cert without worker id", withCert(coordinator, func(w *certs.Worker) { w.WorkerID = "" }), []error{receipt.ErrChain, certs.ErrMalformed}},
		{"cert for another worker key", withCert(coordinator, func(w *certs.Worker) { w.SigningKey = pub(11) }), []error{receipt.ErrSignature}},
		{"receipt before not_before", other(func(r *receipt.Receipt) { r.Time = notBefore.Add(-time.Nanosecond) }), []error{receipt.ErrChain, certs.ErrExpired}},
		{"receipt after not_after", other(func(r *receipt.Receipt) { r.Time = notAfter.Add(time.Second) }), []error{receipt.ErrChain, certs.ErrExpired}},
		{"receipt without time", other(func(r *receipt.Receipt) { r.Time = time.Time{} }), []error{receipt.ErrChain, certs.ErrExpired}},
		{"worker id differs from cert", other(func(r *receipt.Receipt) { r.WorkerID = "w-2" }), []error{receipt.ErrMismatch}},
		{"tee kind differs from cert", other(func(r *receipt.Receipt) { r.TEE.Kind = tee.KindSEVSNP }), []error{receipt.ErrMismatch}},
		{"measurement differs from cert", other(func(r *receipt.Receipt) { r.TEE.Measurement = "ffff" }), []error{receipt.ErrMismatch}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := receipt.Verify(tt.s, pub(1), receipt.Expect{})
			for _, want := range tt.want {
				if !errors.Is(err, want) {
					t.Errorf("got %v, want one matching %v", err, want)
				}
			}
			if v != nil {
				t.Errorf("got %+v, want nil", v)
			}
		})
	}
}

func TestVerifyAtCertBoundaries(t *testing.T) {
	for _, at := range []time.Time{notBefore, notAfter} {
		r := testReceipt()
		r.Time = at
		if _, err := receipt.Verify(signReceipt(t, r), pub(1), expect()); err != nil {
			t.Errorf("receipt at %v: got %v, want nil", at, err)
		}
	}
}

func TestVerifyNonUTCTime(t *testing.T) {
	// A receipt made in another zone is still canonical after a round trip.
	r := testReceipt()
	r.Time = madeAt.In(time.FixedZone("UTC+2", 2*60*60))
	if _, err := receipt.Verify(signReceipt(t, r), pub(1), expect()); err != nil {
		t.Errorf("got %v, want nil", err)
	}
}

func TestEncodeOmitsUnmeasured(t *testing.T) {
	keys := func(t *testing.T, r *receipt.Receipt) (top, metering map[string]json.RawMessage) {
		t.Helper()
		b, err := receipt.Encode(r)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, &top); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(top["metering"], &metering); err != nil {
			t.Fatal(err)
		}
		return top, metering
	}

	r := testReceipt()
	r.Metering = receipt.Metering{}
	top, m := keys(t, r)
	if len(m) != 0 {
		t.Errorf("nothing measured: got metering %v, want {}", m)
	}
	for _, k := range []string{"snapshot_sha256", "reset_generation", "prev"} {
		if _, ok := top[k]; ok {
			t.Errorf("got key %q for an unset field, want it absent", k)
		}
	}

	tests := []struct {
		key string
		set func(*receipt.Metering)
	}{
		{"instructions", func(m *receipt.Metering) { m.Instructions = u64(0) }},
		{"fuel_limit", func(m *receipt.Metering) { m.FuelLimit = u64(0) }},
		{"peak_memory_pages", func(m *receipt.Metering) { var p uint32; m.PeakMemoryPages = &p }},
		{"wall_ns", func(m *receipt.Metering) { m.WallNanos = i64(0) }},
		{"cpu_ns", func(m *receipt.Metering) { m.CPUNanos = i64(0) }},
		{"input_bytes", func(m *receipt.Metering) { m.InputBytes = i64(0) }},
		{"output_bytes", func(m *receipt.Metering) { m.OutputBytes = i64(0) }},
		{"host_calls", func(m *receipt.Metering) { m.HostCalls = map[string]uint64{"x": 0} }},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			r := testReceipt()
			r.Metering = receipt.Metering{}
			tt.set(&r.Metering)
			_, m := keys(t, r)
			if len(m) != 1 {
				t.Errorf("got metering keys %v, want only %q", m, tt.key)
			}
			if _, ok := m[tt.key]; !ok {
				t.Errorf("measured zero: got metering %v, want key %q present", m, tt.key)
			}
			// A measured zero survives verification as a measured zero.
			v, err := receipt.Verify(signReceipt(t, r), pub(1), receipt.Expect{})
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(v.Receipt.Metering, r.Metering) {
				t.Errorf("got metering %+v, want %+v", v.Receipt.Metering, r.Metering)
			}
		})
	}

	b, err := receipt.Encode(testReceipt())
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), `"instructions"`) {
		t.Errorf("got %s, want no instructions key when Instructions is nil", b)
	}
}

func TestEncodeCanonical(t *testing.T) {
	// Map keys are sorted and field order is fixed, so equal receipts
	// encode to equal bytes.
	a, err := receipt.Encode(testReceipt())
	if err != nil {
		t.Fatal(err)
	}
	r := testReceipt()
	r.Metering.HostCalls = map[string]uint64{"clock_time_get": 2, "random_get": 1}
	b, err := receipt.Encode(r)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Errorf("got %s and %s, want equal encodings", a, b)
	}
	if !bytes.HasPrefix(a, []byte(`{"v":1,"invocation_id":"inv-1",`)) {
		t.Errorf("got %s, want declaration order starting with v, invocation_id", a)
	}
}

// TestVerifierCache: a Verifier reuses a verified worker certificate but
// still refuses a certificate it has not verified, and a tampered receipt
// under a cached certificate.
func TestVerifierCache(t *testing.T) {
	v := receipt.NewVerifier(coordinator.Public().(ed25519.PublicKey))
	good := signReceipt(t, testReceipt())
	for range 2 {
		if _, err := v.Verify(good, expect()); err != nil {
			t.Fatalf("good receipt: %v", err)
		}
	}
	forged, err := receipt.Sign(testReceipt(), workerKey, issue(t, key(99), workerCert()))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(forged, expect()); !errors.Is(err, receipt.ErrChain) {
		t.Errorf("certificate from another coordinator: got %v, want ErrChain", err)
	}
	tampered := *good
	tampered.Signature = bytes.Clone(good.Signature)
	tampered.Signature[0] ^= 1
	if _, err := v.Verify(&tampered, expect()); !errors.Is(err, receipt.ErrSignature) {
		t.Errorf("tampered receipt under a cached certificate: got %v, want ErrSignature", err)
	}
}

// TestTrustField checks that a plaintext receipt says gateway-trusted and
// that no other receipt does: a worker (or anyone re-signing) cannot pass a
// plaintext invocation off as confidential, nor the other way round.
func TestTrustField(t *testing.T) {
	for _, tc := range []struct {
		mode, trust string
		ok          bool
	}{
		{"plain", receipt.TrustGatewayTrusted, true},
		{"plain", "", false},
		{"hpke", "", true},
		{"hpke", receipt.TrustGatewayTrusted, false},
		{"plain", "confidential", false},
	} {
		r := testReceipt()
		r.Mode, r.Trust = tc.mode, tc.trust
		_, err := receipt.Verify(signReceipt(t, r), pub(1), expect())
		if (err == nil) != tc.ok {
			t.Errorf("mode %q trust %q: got %v, want ok=%v", tc.mode, tc.trust, err, tc.ok)
		}
		if err != nil && !errors.Is(err, receipt.ErrMalformed) {
			t.Errorf("mode %q trust %q: got %v, want ErrMalformed", tc.mode, tc.trust, err)
		}
	}
}

// TestEntryIsJSON: Entry writes what json.Marshal writes, for empty, nil
// and binary fields alike.
func TestEntryIsJSON(t *testing.T) {
	bin := make([]byte, 300)
	for i := range bin {
		bin[i] = byte(i * 7)
	}
	for _, s := range []*receipt.Signed{
		{},
		{Receipt: []byte{}, Signature: []byte{}},
		{Receipt: []byte(`{"v":1,"x":"<&>"}`), Signature: bin[:64], WorkerCert: certs.Signed{Body: bin, Signature: bin[:63]}},
		{Receipt: bin[:1], Signature: bin[:2], WorkerCert: certs.Signed{Body: bin[:3]}},
	} {
		want, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		got, err := s.Entry()
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("Entry:\n got %s\nwant %s", got, want)
		}
	}
}

func FuzzEntryIsJSON(f *testing.F) {
	f.Add([]byte("r"), []byte("s"), []byte("b"), []byte("c"))
	f.Fuzz(func(t *testing.T, r, s, b, c []byte) {
		sg := &receipt.Signed{Receipt: r, Signature: s, WorkerCert: certs.Signed{Body: b, Signature: c}}
		want, _ := json.Marshal(sg)
		if got, _ := sg.Entry(); !bytes.Equal(got, want) {
			t.Fatalf("Entry %s, json.Marshal %s", got, want)
		}
	})
}

// BenchmarkVerify measures what a client pays to check one receipt of a
// real size (64-character hashes), through a Verifier whose certificate
// cache is warm, as it is on every call after the first.
func BenchmarkVerify(b *testing.B) {
	h := strings.Repeat("ab", 32)
	r := testReceipt()
	r.InvocationID = "inv-" + h[:24]
	r.CodeHash, r.BundleHash, r.SnapshotHash, r.InstrumentedHash = h, h, h, h
	r.RequestHash, r.ResponseHash, r.Caller = h, h, h
	r.ResetGeneration = u64(1234)
	r.Metering.Instructions = u64(987654)
	cert, err := certs.Sign(coordinator, certs.DomainWorker, workerCert())
	if err != nil {
		b.Fatal(err)
	}
	s, err := receipt.Sign(r, workerKey, cert)
	if err != nil {
		b.Fatal(err)
	}
	v := receipt.NewVerifier(pub(1))
	exp := receipt.Expect{Namespace: r.Namespace, Function: r.Function, RequestHash: h, ResponseHash: h}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(s, exp); err != nil {
			b.Fatal(err)
		}
	}
}
