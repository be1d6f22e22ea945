package certs_test

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/cloister-faas/cloister/internal/certs"
	"github.com/cloister-faas/cloister/internal/tee"
)

var (
	notBefore = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	notAfter  = notBefore.Add(24 * time.Hour)
)

func key(seed byte) ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize))
}

func pub(seed byte) ed25519.PublicKey { return key(seed).Public().(ed25519.PublicKey) }

func worker() certs.Worker {
	return certs.Worker{
		WorkerID:        "w-1",
		SigningKey:      pub(10),
		KeyExchangeHash: certs.KeyExchangeHash(bytes.Repeat([]byte{7}, 32)),
		TEE:             tee.KindSim,
		TCB:             "sim-1",
		Measurement:     "ab12",
		EvidenceHash:    "cd34",
		ManifestHash:    "ef56",
		NotBefore:       notBefore,
		NotAfter:        notAfter,
	}
}

func function() certs.Function {
	return certs.Function{
		Namespace:    "acme",
		Name:         "hello",
		Version:      3,
		CodeHash:     "00ff",
		BundleHash:   "11ee",
		OwnerKey:     pub(20),
		HPKEKey:      bytes.Repeat([]byte{9}, 32),
		Suite:        certs.Suite{KEM: 0x20, KDF: 1, AEAD: 1},
		Confidential: "required",
		AllowTEE:     []tee.Kind{tee.KindSim},
		IssuedAt:     notBefore,
	}
}

func sign(t *testing.T, k ed25519.PrivateKey, domain string, v any) certs.Signed {
	t.Helper()
	s, err := certs.Sign(k, domain, v)
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	return s
}

func TestSignOpenRoundTrip(t *testing.T) {
	want := worker()
	s := sign(t, key(1), certs.DomainWorker, want)
	var got certs.Worker
	if err := certs.Open(s, pub(1), certs.DomainWorker, &got); err != nil {
		t.Fatalf("Open: %v", err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

func TestSignedJSONRoundTrip(t *testing.T) {
	// Certificates travel as JSON; the body and signature must survive it.
	s := sign(t, key(1), certs.DomainFunction, function())
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var back certs.Signed
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	got, err := certs.OpenFunction(back, pub(1))
	if err != nil {
		t.Fatalf("OpenFunction: %v", err)
	}
	if want := function(); !reflect.DeepEqual(*got, want) {
		t.Errorf("got %+v, want %+v", *got, want)
	}
}

func TestOpenRefused(t *testing.T) {
	good := sign(t, key(1), certs.DomainWorker, worker())
	flipBody := certs.Signed{Body: bytes.Clone(good.Body), Signature: good.Signature}
	flipBody.Body[len(flipBody.Body)/2] ^= 0x01
	flipSig := certs.Signed{Body: good.Body, Signature: bytes.Clone(good.Signature)}
	flipSig.Signature[10] ^= 0x01
	// A signature over the bare body, without the domain prefix.
	noDomain := certs.Signed{Body: good.Body, Signature: ed25519.Sign(key(1), good.Body)}
	notJSON := certs.Signed{Body: []byte("not json"), Signature: ed25519.Sign(key(1), append([]byte(certs.DomainWorker), "not json"...))}

	tests := []struct {
		name   string
		s      certs.Signed
		pub    ed25519.PublicKey
		domain string
		want   error
	}{
		{"wrong key", good, pub(2), certs.DomainWorker, certs.ErrSignature},
		{"nil key", good, nil, certs.DomainWorker, certs.ErrSignature},
		{"short key", good, pub(1)[:31], certs.DomainWorker, certs.ErrSignature},
		{"worker cert opened as function", good, pub(1), certs.DomainFunction, certs.ErrSignature},
		{"empty domain", good, pub(1), "", certs.ErrSignature},
		{"no domain in signature", noDomain, pub(1), certs.DomainWorker, certs.ErrSignature},
		{"flipped body byte", flipBody, pub(1), certs.DomainWorker, certs.ErrSignature},
		{"flipped signature byte", flipSig, pub(1), certs.DomainWorker, certs.ErrSignature},
		{"no signature", certs.Signed{Body: good.Body}, pub(1), certs.DomainWorker, certs.ErrSignature},
		{"empty", certs.Signed{}, pub(1), certs.DomainWorker, certs.ErrSignature},
		{"signed body not json", notJSON, pub(1), certs.DomainWorker, certs.ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var w certs.Worker
			if err := certs.Open(tt.s, tt.pub, tt.domain, &w); !errors.Is(err, tt.want) {
				t.Errorf("got %v, want %v", err, tt.want)
			}
		})
	}
}

func TestDomainSeparation(t *testing.T) {
	ws := sign(t, key(1), certs.DomainWorker, worker())
	if _, err := certs.OpenFunction(ws, pub(1)); !errors.Is(err, certs.ErrSignature) {
		t.Errorf("worker cert as function cert: got %v, want %v", err, certs.ErrSignature)
	}
	fs := sign(t, key(1), certs.DomainFunction, function())
	if _, err := certs.OpenWorker(fs, pub(1)); !errors.Is(err, certs.ErrSignature) {
		t.Errorf("function cert as worker cert: got %v, want %v", err, certs.ErrSignature)
	}
	// A body that decodes as both statements still cannot cross domains.
	both := map[string]any{"worker_id": "w", "signing_key": []byte(pub(3)), "name": "f", "version": 1,
		"hpke_key": []byte{1}, "code_sha256": "aa"}
	bs := sign(t, key(1), certs.DomainWorker, both)
	if _, err := certs.OpenWorker(bs, pub(1)); err != nil {
		t.Fatalf("control: OpenWorker: %v", err)
	}
	if _, err := certs.OpenFunction(bs, pub(1)); !errors.Is(err, certs.ErrSignature) {
		t.Errorf("dual body under worker domain as function: got %v, want %v", err, certs.ErrSignature)
	}
	if certs.DomainWorker == certs.DomainFunction {
		t.Fatal("got equal domains, want distinct")
	}
}

func TestSignUnencodable(t *testing.T) {
	if _, err := certs.Sign(key(1), certs.DomainWorker, make(chan int)); err == nil {
		t.Error("got nil error signing a channel, want an encoding error")
	}
}

func TestValidAt(t *testing.T) {
	w := worker()
	tests := []struct {
		name string
		at   time.Time
		ok   bool
	}{
		{"long before", notBefore.Add(-time.Hour), false},
		{"1ns before not_before", notBefore.Add(-time.Nanosecond), false},
		{"at not_before", notBefore, true},
		{"inside", notBefore.Add(time.Hour), true},
		{"at not_after", notAfter, true},
		{"1ns after not_after", notAfter.Add(time.Nanosecond), false},
		{"long after", notAfter.Add(365 * 24 * time.Hour), false},
		{"zero time", time.Time{}, false},
		{"not_before in another zone", notBefore.In(time.FixedZone("UTC-7", -7*60*60)), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := w.ValidAt(tt.at)
			if tt.ok && err != nil {
				t.Errorf("ValidAt(%v): got %v, want nil", tt.at, err)
			}
			if !tt.ok && !errors.Is(err, certs.ErrExpired) {
				t.Errorf("ValidAt(%v): got %v, want %v", tt.at, err, certs.ErrExpired)
			}
		})
	}
}

func TestOpenWorker(t *testing.T) {
	got, err := certs.OpenWorker(sign(t, key(1), certs.DomainWorker, worker()), pub(1))
	if err != nil {
		t.Fatalf("OpenWorker: %v", err)
	}
	if want := worker(); !reflect.DeepEqual(*got, want) {
		t.Errorf("got %+v, want %+v", *got, want)
	}
}

func TestOpenWorkerRefused(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*certs.Worker)
		signer ed25519.PrivateKey
		want   error
	}{
		{"no worker id", func(w *certs.Worker) { w.WorkerID = "" }, key(1), certs.ErrMalformed},
		{"no signing key", func(w *certs.Worker) { w.SigningKey = nil }, key(1), certs.ErrMalformed},
		{"short signing key", func(w *certs.Worker) { w.SigningKey = w.SigningKey[:31] }, key(1), certs.ErrMalformed},
		{"long signing key", func(w *certs.Worker) { w.SigningKey = append(bytes.Clone(w.SigningKey), 0) }, key(1), certs.ErrMalformed},
		{"other coordinator", func(*certs.Worker) {}, key(2), certs.ErrSignature},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := worker()
			tt.modify(&w)
			got, err := certs.OpenWorker(sign(t, tt.signer, certs.DomainWorker, w), pub(1))
			if !errors.Is(err, tt.want) {
				t.Errorf("got %v, want %v", err, tt.want)
			}
			if got != nil {
				t.Errorf("got certificate %+v, want nil", *got)
			}
		})
	}
}

func TestOpenFunctionRefused(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*certs.Function)
		signer ed25519.PrivateKey
		want   error
	}{
		{"no name", func(f *certs.Function) { f.Name = "" }, key(1), certs.ErrMalformed},
		{"version 0", func(f *certs.Function) { f.Version = 0 }, key(1), certs.ErrMalformed},
		{"negative version", func(f *certs.Function) { f.Version = -1 }, key(1), certs.ErrMalformed},
		{"no hpke key", func(f *certs.Function) { f.HPKEKey = nil }, key(1), certs.ErrMalformed},
		{"no code hash", func(f *certs.Function) { f.CodeHash = "" }, key(1), certs.ErrMalformed},
		{"other coordinator", func(*certs.Function) {}, key(2), certs.ErrSignature},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := function()
			tt.modify(&f)
			got, err := certs.OpenFunction(sign(t, tt.signer, certs.DomainFunction, f), pub(1))
			if !errors.Is(err, tt.want) {
				t.Errorf("got %v, want %v", err, tt.want)
			}
			if got != nil {
				t.Errorf("got certificate %+v, want nil", *got)
			}
		})
	}
}

// TestAdmits: the one TEE policy check of every role and the client.
func TestAdmits(t *testing.T) {
	snp := func(tcb string) *certs.Worker { return &certs.Worker{TEE: tee.KindSEVSNP, TCB: tcb} }
	const min = "bl=3,tee=0,snp=8,ucode=115"
	f := &certs.Function{Namespace: "ns", Name: "f", Version: 1, AllowTEE: []tee.Kind{tee.KindSEVSNP, tee.KindTDX},
		MinTCB: map[tee.Kind]string{tee.KindSEVSNP: min}}
	for _, c := range []struct {
		name string
		f    *certs.Function
		w    *certs.Worker
		ok   bool
	}{
		{"no policy", &certs.Function{}, &certs.Worker{TEE: tee.KindSim}, true},
		{"kind not allowed", f, &certs.Worker{TEE: tee.KindSim, TCB: "sim-1"}, false},
		{"at the minimum", f, snp(min), true},
		{"above it", f, snp("bl=4,tee=1,snp=9,ucode=200"), true},
		{"one component below", f, snp("bl=3,tee=0,snp=7,ucode=200"), false},
		{"an unparsable TCB", f, snp("garbage"), false},
		{"an allowed kind without a minimum", f, &certs.Worker{TEE: tee.KindTDX, TCB: "00"}, true},
	} {
		err := c.f.Admits(c.w)
		if (err == nil) != c.ok || (err != nil && !errors.Is(err, certs.ErrTEEPolicy)) {
			t.Errorf("%s: %v, want admitted %v", c.name, err, c.ok)
		}
	}
}

// TestCheckKeyExchange: a worker certificate names its key-exchange key by
// its hash; only that key passes, and a certificate that names none (one
// issued before the hash, which carried the key) passes no key.
func TestCheckKeyExchange(t *testing.T) {
	k := bytes.Repeat([]byte{7}, 32)
	w := worker()
	if err := w.CheckKeyExchange(k); err != nil {
		t.Fatalf("the certified key: %v", err)
	}
	for name, other := range map[string][]byte{"another key": bytes.Repeat([]byte{8}, 32), "a prefix": k[:31], "no key": nil} {
		if err := w.CheckKeyExchange(other); !errors.Is(err, certs.ErrKeyExchange) {
			t.Errorf("%s: %v, want ErrKeyExchange", name, err)
		}
	}
	old := certs.Worker{WorkerID: "w-old"}
	if err := old.CheckKeyExchange(k); !errors.Is(err, certs.ErrKeyExchange) {
		t.Errorf("a certificate without a key-exchange hash: %v, want ErrKeyExchange", err)
	}
}
