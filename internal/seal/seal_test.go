package seal_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/hpke"
	"encoding/hex"
	"errors"
	"testing"
	"time"

	"github.com/cloister-faas/cloister/internal/certs"
	"github.com/cloister-faas/cloister/internal/seal"
)

// ticketLabel is the AES-GCM label of session tickets (part of the format).
const ticketLabel = "cloister/v1/ticket"

var (
	master   = bytes.Repeat([]byte{0x42}, 32)
	codeHash = "c0dec0dec0dec0dec0dec0dec0dec0dec0dec0dec0dec0dec0dec0dec0dec0de"
	now      = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
)

// fn names one function version.
type fn struct {
	ns, name string
	version  int
	code     string
}

var hello = fn{"acme", "hello", 1, codeHash}

func (f fn) info() []byte { return seal.Info(f.ns, f.name, f.version, f.code) }

func (f fn) key(t testing.TB) hpke.PrivateKey {
	t.Helper()
	return f.keyOf(t, seal.DefaultSuite)
}

func (f fn) keyOf(t testing.TB, s certs.Suite) hpke.PrivateKey {
	t.Helper()
	k, err := seal.DeriveFunctionKey(master, s, f.ns, f.name, f.version, f.code)
	if err != nil {
		t.Fatalf("DeriveFunctionKey: %v", err)
	}
	return k
}

func TestSealOpenRequestRoundTrip(t *testing.T) {
	k := hello.key(t)
	for _, session := range []bool{false, true} {
		p := seal.Payload{Nonce: [16]byte{1, 2, 3}, Time: now, Input: []byte(`{"who":"world"}`)}
		c, err := seal.SealRequest(seal.PublicKeyBytes(k), hello.info(), p, nil, session)
		if err != nil {
			t.Fatalf("SealRequest(session=%v): %v", session, err)
		}
		s, err := seal.OpenRequest(k, hello.info(), c.Enc, c.Ciphertext, session)
		if err != nil {
			t.Fatalf("OpenRequest(session=%v): %v", session, err)
		}
		if !bytes.Equal(s.Payload, p.Encode()) {
			t.Errorf("session=%v: got payload %x, want %x", session, s.Payload, p.Encode())
		}
		if len(c.ResponseKey) != 16 || !bytes.Equal(c.ResponseKey, s.ResponseKey) {
			t.Errorf("session=%v: got response keys %x and %x, want equal 16-byte keys", session, c.ResponseKey, s.ResponseKey)
		}
		if session {
			if len(c.SessionKey) != 16 || !bytes.Equal(c.SessionKey, s.SessionKey) {
				t.Errorf("got session keys %x and %x, want equal 16-byte keys", c.SessionKey, s.SessionKey)
			}
			if bytes.Equal(c.SessionKey, c.ResponseKey) {
				t.Error("got session key equal to response key, want distinct exports")
			}
		} else if c.SessionKey != nil || s.SessionKey != nil {
			t.Errorf("no session: got session keys %x and %x, want nil", c.SessionKey, s.SessionKey)
		}
		// The response travels back under the exported response key.
		resp, err := seal.SealSymmetric(s.ResponseKey, seal.AADResponse, nil, []byte("hi"))
		if err != nil {
			t.Fatal(err)
		}
		if got, err := seal.OpenSymmetric(c.ResponseKey, seal.AADResponse, nil, resp); err != nil || string(got) != "hi" {
			t.Errorf("session=%v: response opened to %q, %v; want \"hi\"", session, got, err)
		}
	}
}

func TestSessionKeyOnlyWhenBothAsk(t *testing.T) {
	k := hello.key(t)
	c, err := seal.SealRequest(seal.PublicKeyBytes(k), hello.info(), seal.Payload{Input: []byte("x")}, nil, true)
	if err != nil {
		t.Fatal(err)
	}
	s, err := seal.OpenRequest(k, hello.info(), c.Enc, c.Ciphertext, false)
	if err != nil {
		t.Fatal(err)
	}
	if s.SessionKey != nil {
		t.Errorf("server did not open a session: got session key %x, want nil", s.SessionKey)
	}
	c2, err := seal.SealRequest(seal.PublicKeyBytes(k), hello.info(), seal.Payload{Input: []byte("x")}, nil, true)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(c.SessionKey, c2.SessionKey) || bytes.Equal(c.ResponseKey, c2.ResponseKey) {
		t.Error("two requests exported the same keys, want fresh keys per request")
	}
}

func TestOpenRequestRefused(t *testing.T) {
	k := hello.key(t)
	c, err := seal.SealRequest(seal.PublicKeyBytes(k), hello.info(), seal.Payload{Input: []byte("secret input")}, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	otherVersion := fn{hello.ns, hello.name, 2, hello.code}
	otherCode := fn{hello.ns, hello.name, hello.version, "0" + hello.code[1:]}
	otherName := fn{hello.ns, "goodbye", hello.version, hello.code}
	otherNS := fn{"evil", hello.name, hello.version, hello.code}

	tests := []struct {
		name string
		key  hpke.PrivateKey
		info []byte
		enc  []byte
		ct   []byte
	}{
		{"info of other version", k, otherVersion.info(), c.Enc, c.Ciphertext},
		{"info of other code hash", k, otherCode.info(), c.Enc, c.Ciphertext},
		{"info of other function", k, otherName.info(), c.Enc, c.Ciphertext},
		{"info of other namespace", k, otherNS.info(), c.Enc, c.Ciphertext},
		{"no info", k, nil, c.Enc, c.Ciphertext},
		{"key of other version", otherVersion.key(t), hello.info(), c.Enc, c.Ciphertext},
		{"key and info of other version", otherVersion.key(t), otherVersion.info(), c.Enc, c.Ciphertext},
		{"key of other code hash", otherCode.key(t), otherCode.info(), c.Enc, c.Ciphertext},
		{"empty ciphertext", k, hello.info(), c.Enc, nil},
		{"truncated ciphertext", k, hello.info(), c.Enc, c.Ciphertext[:len(c.Ciphertext)-1]},
		{"extended ciphertext", k, hello.info(), c.Enc, append(bytes.Clone(c.Ciphertext), 0)},
		{"empty enc", k, hello.info(), nil, c.Ciphertext},
		{"truncated enc", k, hello.info(), c.Enc[:len(c.Enc)-1], c.Ciphertext},
		{"all-zero enc", k, hello.info(), make([]byte, len(c.Enc)), c.Ciphertext},
	}
	for i := range c.Ciphertext {
		ct := bytes.Clone(c.Ciphertext)
		ct[i] ^= 0x01
		tests = append(tests, struct {
			name string
			key  hpke.PrivateKey
			info []byte
			enc  []byte
			ct   []byte
		}{"flipped ciphertext byte", k, hello.info(), c.Enc, ct})
	}
	for i := range c.Enc {
		for _, bit := range []byte{0x01, 0x80} { // 0x80 of the last byte is masked by X25519
			enc := bytes.Clone(c.Enc)
			enc[i] ^= bit
			tests = append(tests, struct {
				name string
				key  hpke.PrivateKey
				info []byte
				enc  []byte
				ct   []byte
			}{"flipped enc bit", k, hello.info(), enc, c.Ciphertext})
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := seal.OpenRequest(tt.key, tt.info, tt.enc, tt.ct, false)
			if !errors.Is(err, seal.ErrDecrypt) {
				t.Errorf("got %v, want %v", err, seal.ErrDecrypt)
			}
			if s != nil {
				t.Errorf("got %+v, want nil", s)
			}
		})
	}
}

func TestSealRequestBadKey(t *testing.T) {
	for _, pub := range [][]byte{nil, make([]byte, 31), make([]byte, 33)} {
		if c, err := seal.SealRequest(pub, hello.info(), seal.Payload{Input: []byte("x")}, nil, false); !errors.Is(err, seal.ErrMalformed) {
			t.Errorf("public key of %d bytes: got %+v, %v; want %v", len(pub), c, err, seal.ErrMalformed)
		}
	}
}

func TestSealToOpenFrom(t *testing.T) {
	k, err := seal.NewKeyPair()
	if err != nil {
		t.Fatal(err)
	}
	info := []byte("cloister/v1/key-release")
	enc, ct, err := seal.SealTo(seal.PublicKeyBytes(k), info, []byte("function key"))
	if err != nil {
		t.Fatal(err)
	}
	if pt, err := seal.OpenFrom(k, info, enc, ct); err != nil || string(pt) != "function key" {
		t.Errorf("got %q, %v; want \"function key\"", pt, err)
	}
	other, err := seal.NewKeyPair()
	if err != nil {
		t.Fatal(err)
	}
	flipped := bytes.Clone(ct)
	flipped[0] ^= 1
	tests := []struct {
		name    string
		k       hpke.PrivateKey
		info    []byte
		enc, ct []byte
	}{
		{"other key", other, info, enc, ct},
		{"other info", k, []byte("cloister/v1/other"), enc, ct},
		{"flipped ciphertext", k, info, enc, flipped},
		{"no enc", k, info, nil, ct},
	}
	for _, tt := range tests {
		if _, err := seal.OpenFrom(tt.k, tt.info, tt.enc, tt.ct); !errors.Is(err, seal.ErrDecrypt) {
			t.Errorf("%s: got %v, want %v", tt.name, err, seal.ErrDecrypt)
		}
	}
	if _, _, err := seal.SealTo([]byte("short"), info, nil); !errors.Is(err, seal.ErrMalformed) {
		t.Errorf("bad public key: got %v, want %v", err, seal.ErrMalformed)
	}
}

func TestDeriveFunctionKey(t *testing.T) {
	pubOf := func(master []byte, f fn) string {
		k, err := seal.DeriveFunctionKey(master, seal.DefaultSuite, f.ns, f.name, f.version, f.code)
		if err != nil {
			t.Fatalf("DeriveFunctionKey(%+v): %v", f, err)
		}
		return string(seal.PublicKeyBytes(k))
	}
	if a, b := pubOf(master, hello), pubOf(bytes.Clone(master), hello); a != b {
		t.Errorf("same inputs: got %x and %x, want equal keys", a, b)
	}
	otherMaster := bytes.Repeat([]byte{0x43}, 32)
	variants := []struct {
		name   string
		master []byte
		f      fn
	}{
		{"base", master, hello},
		{"other master", otherMaster, hello},
		{"other namespace", master, fn{"acme2", "hello", 1, codeHash}},
		{"other name", master, fn{"acme", "hello2", 1, codeHash}},
		{"other version", master, fn{"acme", "hello", 2, codeHash}},
		{"other code hash", master, fn{"acme", "hello", 1, "00" + codeHash[2:]}},
		{"namespace and name split differently", master, fn{"acmeh", "ello", 1, codeHash}},
		{"version 11 vs 1 and code 1...", master, fn{"acme", "hello", 11, codeHash[1:]}},
	}
	seen := map[string]string{}
	for _, v := range variants {
		p := pubOf(v.master, v.f)
		if prev, ok := seen[p]; ok {
			t.Errorf("%s: got the same key as %s, want distinct", v.name, prev)
		}
		seen[p] = v.name
	}
}

func TestParsePrivateKey(t *testing.T) {
	for _, s := range []certs.Suite{seal.SuiteX25519, seal.SuiteXWing} {
		k := hello.keyOf(t, s)
		b, err := k.Bytes()
		if err != nil {
			t.Fatal(err)
		}
		pub := seal.PublicKeyBytes(k)
		k2, err := seal.ParsePrivateKey(pub, b)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(pub, seal.PublicKeyBytes(k2)) {
			t.Error("parsed key has a different public key")
		}
		if _, err := seal.ParsePrivateKey(pub, b[:31]); err == nil {
			t.Error("31-byte private key: got nil error, want one")
		}
		other, _ := hello.keyOf(t, s).Bytes()
		other[1] ^= 1 // not byte 0: X25519 clamps its low bits
		if _, err := seal.ParsePrivateKey(pub, other); !errors.Is(err, seal.ErrMalformed) {
			t.Errorf("%s: a private key of another public key: %v", seal.SuiteName(s), err)
		}
	}
}

// TestSuites: the X25519 suite derives the keys it always did (existing
// certificates keep their keys); X-Wing derives other keys from the same
// inputs; each round-trips a request; a certificate's named suite must
// match its key.
func TestSuites(t *testing.T) {
	x := hello.keyOf(t, seal.SuiteX25519)
	if got := hex.EncodeToString(seal.PublicKeyBytes(x)); got != helloX25519 {
		t.Fatalf("the X25519 key of hello changed: %s", got)
	}
	w := hello.keyOf(t, seal.SuiteXWing)
	if len(seal.PublicKeyBytes(w)) != 1216 || seal.DefaultSuite != seal.SuiteXWing {
		t.Fatalf("X-Wing public key of %d bytes; default suite %v", len(seal.PublicKeyBytes(w)), seal.DefaultSuite)
	}
	for _, c := range []struct {
		s certs.Suite
		k hpke.PrivateKey
	}{{seal.SuiteX25519, x}, {seal.SuiteXWing, w}} {
		pub := seal.PublicKeyBytes(c.k)
		if err := seal.CheckSuite(c.s, pub); err != nil {
			t.Fatalf("%s: %v", seal.SuiteName(c.s), err)
		}
		cc, err := seal.SealRequest(pub, hello.info(), seal.NewPayload([]byte("pq?"), now), nil, true)
		if err != nil {
			t.Fatal(err)
		}
		sc, err := seal.OpenRequest(c.k, hello.info(), cc.Enc, cc.Ciphertext, true)
		if err != nil || !bytes.Equal(sc.SessionKey, cc.SessionKey) || !bytes.Equal(sc.ResponseKey, cc.ResponseKey) {
			t.Fatalf("%s: round trip: %v", seal.SuiteName(c.s), err)
		}
		// Sealed to one suite's key, opened with the other's: refused.
		other := w
		if c.k == w {
			other = x
		}
		if _, err := seal.OpenRequest(other, hello.info(), cc.Enc, cc.Ciphertext, false); !errors.Is(err, seal.ErrDecrypt) {
			t.Fatalf("%s opened with the other suite's key: %v", seal.SuiteName(c.s), err)
		}
	}
	for _, c := range []struct {
		s   certs.Suite
		pub []byte
	}{
		{seal.SuiteX25519, seal.PublicKeyBytes(w)},
		{seal.SuiteXWing, seal.PublicKeyBytes(x)},
		{certs.Suite{KEM: 0x0020, KDF: 1, AEAD: 2}, seal.PublicKeyBytes(x)},
		{certs.Suite{}, seal.PublicKeyBytes(x)},
	} {
		if err := seal.CheckSuite(c.s, c.pub); !errors.Is(err, seal.ErrSuite) {
			t.Errorf("suite %+v with a key of %d bytes: %v", c.s, len(c.pub), err)
		}
	}
}

func TestInfo(t *testing.T) {
	got := string(seal.Info("acme", "hello", 12, "ab"))
	if want := "cloister/v1/request\x00acme\x00hello\x0012\x00ab"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestSymmetric(t *testing.T) {
	key := bytes.Repeat([]byte{1}, 16)
	aad := []byte("request-hash")
	ct, err := seal.SealSymmetric(key, seal.AADRequest, aad, []byte("session message"))
	if err != nil {
		t.Fatal(err)
	}
	if pt, err := seal.OpenSymmetric(key, seal.AADRequest, aad, ct); err != nil || string(pt) != "session message" {
		t.Fatalf("got %q, %v; want \"session message\"", pt, err)
	}
	ct2, err := seal.SealSymmetric(key, seal.AADRequest, aad, []byte("session message"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(ct, ct2) {
		t.Error("two seals of one message are equal, want fresh nonces")
	}
	// A 32-byte key selects AES-256; it must round-trip too.
	key32 := bytes.Repeat([]byte{2}, 32)
	if c, err := seal.SealSymmetric(key32, seal.AADResponse, nil, nil); err != nil {
		t.Errorf("AES-256 seal: %v", err)
	} else if pt, err := seal.OpenSymmetric(key32, seal.AADResponse, nil, c); err != nil || len(pt) != 0 {
		t.Errorf("AES-256 empty message: got %q, %v; want empty", pt, err)
	}

	flipped := bytes.Clone(ct)
	flipped[len(flipped)-1] ^= 1
	flippedNonce := bytes.Clone(ct)
	flippedNonce[0] ^= 1
	tests := []struct {
		name  string
		key   []byte
		label string
		aad   []byte
		ct    []byte
		want  error
	}{
		{"wrong label", key, seal.AADResponse, aad, ct, seal.ErrDecrypt},
		{"empty label", key, "", aad, ct, seal.ErrDecrypt},
		{"wrong aad", key, seal.AADRequest, []byte("other-hash"), ct, seal.ErrDecrypt},
		{"no aad", key, seal.AADRequest, nil, ct, seal.ErrDecrypt},
		{"wrong key", bytes.Repeat([]byte{2}, 16), seal.AADRequest, aad, ct, seal.ErrDecrypt},
		{"flipped tag byte", key, seal.AADRequest, aad, flipped, seal.ErrDecrypt},
		{"flipped nonce byte", key, seal.AADRequest, aad, flippedNonce, seal.ErrDecrypt},
		{"truncated", key, seal.AADRequest, aad, ct[:len(ct)-1], seal.ErrDecrypt},
		{"shorter than nonce and tag", key, seal.AADRequest, aad, ct[:27], seal.ErrDecrypt},
		{"empty", key, seal.AADRequest, aad, nil, seal.ErrDecrypt},
		{"key of 15 bytes", key[:15], seal.AADRequest, aad, ct, seal.ErrMalformed},
		{"no key", nil, seal.AADRequest, aad, ct, seal.ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pt, err := seal.OpenSymmetric(tt.key, tt.label, tt.aad, tt.ct)
			if !errors.Is(err, tt.want) {
				t.Errorf("got %q, %v; want %v", pt, err, tt.want)
			}
		})
	}
	if _, err := seal.SealSymmetric(key[:5], seal.AADRequest, nil, nil); !errors.Is(err, seal.ErrMalformed) {
		t.Errorf("seal with 5-byte key: got %v, want %v", err, seal.ErrMalformed)
	}
}

func testTicket() seal.Ticket {
	return seal.Ticket{
		ID:        []byte("session-1"),
		Key:       bytes.Repeat([]byte{7}, 16),
		Namespace: "acme",
		Name:      "hello",
		Version:   1,
		CodeHash:  codeHash,
		Expires:   now.Add(time.Hour),
	}
}

func TestTicket(t *testing.T) {
	key, err := seal.TicketKey(hello.key(t))
	if err != nil {
		t.Fatal(err)
	}
	again, err := seal.TicketKey(hello.key(t))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(key, again) {
		t.Errorf("got ticket keys %x and %x, want equal for one function key", key, again)
	}
	otherKey, err := seal.TicketKey(fn{"acme", "hello", 2, codeHash}.key(t))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(key, otherKey) {
		t.Error("got equal ticket keys for two function versions, want distinct")
	}

	want := testTicket()
	sealed, err := seal.SealTicket(key, want)
	if err != nil {
		t.Fatal(err)
	}
	got, err := seal.OpenTicket(key, sealed)
	if err != nil {
		t.Fatalf("OpenTicket: %v", err)
	}
	if !bytes.Equal(got.ID, want.ID) || !bytes.Equal(got.Key, want.Key) || got.Namespace != want.Namespace ||
		got.Name != want.Name || got.Version != want.Version || got.CodeHash != want.CodeHash || !got.Expires.Equal(want.Expires) {
		t.Errorf("got %+v, want %+v", *got, want)
	}

	shortKey := testTicket()
	shortKey.Key = shortKey.Key[:8]
	sealedShort, err := seal.SealTicket(key, shortKey)
	if err != nil {
		t.Fatal(err)
	}
	notJSON, err := seal.SealSymmetric(key, ticketLabel, nil, []byte("not json"))
	if err != nil {
		t.Fatal(err)
	}
	asResponse, err := seal.SealSymmetric(key, seal.AADResponse, nil, []byte(`{"key":"BwcHBwcHBwcHBwcHBwcHBw=="}`))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		key    []byte
		sealed []byte
		want   error
	}{
		{"wrong key", otherKey, sealed, seal.ErrDecrypt},
		{"truncated", key, sealed[:len(sealed)-1], seal.ErrDecrypt},
		{"empty", key, nil, seal.ErrDecrypt},
		{"sealed under another label", key, asResponse, seal.ErrDecrypt},
		{"session key of 8 bytes", key, sealedShort, seal.ErrMalformed},
		{"not json", key, notJSON, seal.ErrMalformed},
	}
	for i := range sealed {
		b := bytes.Clone(sealed)
		b[i] ^= 0x80
		tests = append(tests, struct {
			name   string
			key    []byte
			sealed []byte
			want   error
		}{"flipped byte", key, b, seal.ErrDecrypt})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := seal.OpenTicket(tt.key, tt.sealed)
			if !errors.Is(err, tt.want) {
				t.Errorf("got %v, want %v", err, tt.want)
			}
			if got != nil {
				t.Errorf("got ticket %+v, want nil", *got)
			}
		})
	}
}

func TestPayloadRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		p    seal.Payload
	}{
		{"input", seal.Payload{Nonce: [16]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}, Time: now, Input: []byte("input")}},
		{"empty input", seal.Payload{Time: now, Input: []byte{}}},
		{"nanoseconds", seal.Payload{Time: now.Add(123456789 * time.Nanosecond), Input: []byte{0}}},
		{"before 1970", seal.Payload{Time: time.Date(1969, 7, 20, 20, 17, 0, 0, time.UTC), Input: []byte("moon")}},
		{"other zone", seal.Payload{Time: now.In(time.FixedZone("UTC+9", 9*60*60)), Input: []byte("x")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := tt.p.Encode()
			if got, want := len(b), 25+len(tt.p.Input); got != want {
				t.Errorf("got encoding of %d bytes, want %d", got, want)
			}
			got, err := seal.DecodePayload(b)
			if err != nil {
				t.Fatalf("DecodePayload: %v", err)
			}
			if got.Nonce != tt.p.Nonce || !got.Time.Equal(tt.p.Time) || !bytes.Equal(got.Input, tt.p.Input) {
				t.Errorf("got %+v, want %+v", got, tt.p)
			}
		})
	}
}

func TestNewPayload(t *testing.T) {
	a, b := seal.NewPayload([]byte("x"), now), seal.NewPayload([]byte("x"), now)
	if a.Nonce == b.Nonce {
		t.Errorf("got nonce %x twice, want fresh nonces", a.Nonce)
	}
	if a.Nonce == ([16]byte{}) {
		t.Error("got an all-zero nonce")
	}
	if !a.Time.Equal(now) || string(a.Input) != "x" {
		t.Errorf("got %+v, want time %v and input \"x\"", a, now)
	}
}

func TestDecodePayloadMalformed(t *testing.T) {
	good := seal.Payload{Time: now, Input: []byte("in")}.Encode()
	v0 := bytes.Clone(good)
	v0[0] = 0
	v2 := bytes.Clone(good)
	v2[0] = 2
	tests := []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"version only", []byte{1}},
		{"one byte short of header", good[:24]},
		{"version 0", v0},
		{"version 2", v2},
		{"text", []byte("this is not a sealed payload")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if p, err := seal.DecodePayload(tt.b); !errors.Is(err, seal.ErrMalformed) {
				t.Errorf("got %+v, %v; want %v", p, err, seal.ErrMalformed)
			}
		})
	}
	if p, err := seal.DecodePayload(good[:25]); err != nil || len(p.Input) != 0 {
		t.Errorf("header only: got %+v, %v; want empty input", p, err)
	}
}

func TestRequestHash(t *testing.T) {
	base := seal.RequestHash("sealed", []byte("enc"), []byte("ticket"), []byte("ct"))
	if again := seal.RequestHash("sealed", []byte("enc"), []byte("ticket"), []byte("ct")); again != base {
		t.Errorf("got %s then %s, want a deterministic hash", base, again)
	}
	if len(base) != 64 {
		t.Errorf("got %d hex digits, want 64", len(base))
	}
	tests := []struct {
		name            string
		mode            string
		enc, ticket, ct []byte
	}{
		{"other mode", "session", []byte("enc"), []byte("ticket"), []byte("ct")},
		{"other enc", "sealed", []byte("enC"), []byte("ticket"), []byte("ct")},
		{"other ticket", "sealed", []byte("enc"), []byte("tickeT"), []byte("ct")},
		{"other ct", "sealed", []byte("enc"), []byte("ticket"), []byte("cT")},
		{"no ticket", "sealed", []byte("enc"), nil, []byte("ct")},
	}
	for _, tt := range tests {
		if got := seal.RequestHash(tt.mode, tt.enc, tt.ticket, tt.ct); got == base {
			t.Errorf("%s: got the base hash %s, want a different one", tt.name, got)
		}
	}

	// The same bytes split differently across the parts must not collide.
	splits := []struct {
		name            string
		mode            string
		enc, ticket, ct []byte
	}{
		{`mode "a", enc "b"`, "a", []byte("b"), nil, nil},
		{`mode "ab"`, "ab", nil, nil, nil},
		{`enc "ab"`, "", []byte("ab"), nil, nil},
		{`enc "a", ticket "b"`, "", []byte("a"), []byte("b"), nil},
		{`ticket "ab"`, "", nil, []byte("ab"), nil},
		{`ticket "a", ct "b"`, "", nil, []byte("a"), []byte("b")},
		{`ct "ab"`, "", nil, nil, []byte("ab")},
		{`mode "a", ct "b"`, "a", nil, nil, []byte("b")},
	}
	seen := map[string]string{}
	for _, s := range splits {
		h := seal.RequestHash(s.mode, s.enc, s.ticket, s.ct)
		if prev, ok := seen[h]; ok {
			t.Errorf("%s and %s: got the same hash %s, want distinct", s.name, prev, h)
		}
		seen[h] = s.name
	}
}

func TestSHA256Hex(t *testing.T) {
	const want = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" // FIPS 180-2 "abc"
	if got := seal.SHA256Hex([]byte("abc")); got != want {
		t.Errorf("got %s, want %s", got, want)
	}
}

// TestCallerSignature: a payload signed by the caller opens with its key
// and verifies for its own request only; a forged key, a signature moved
// to another request, another function or another input are refused.
func TestCallerSignature(t *testing.T) {
	k := hello.key(t)
	_, caller, _ := ed25519.GenerateKey(nil)
	_, other, _ := ed25519.GenerateKey(nil)
	open := func(c *seal.ClientContext, info []byte) (seal.Payload, error) {
		t.Helper()
		s, err := seal.OpenRequest(k, info, c.Enc, c.Ciphertext, false)
		if err != nil {
			return seal.Payload{}, err
		}
		p, err := seal.DecodePayload(s.Payload)
		if err != nil {
			t.Fatal(err)
		}
		return p, p.CheckCaller(info, c.Enc)
	}
	p := seal.NewPayload([]byte("in"), now)
	c, err := seal.SealRequest(seal.PublicKeyBytes(k), hello.info(), p, caller, false)
	if err != nil {
		t.Fatal(err)
	}
	got, err := open(c, hello.info())
	if err != nil || !bytes.Equal(got.Caller, caller.Public().(ed25519.PublicKey)) || string(got.Input) != "in" || got.Nonce != p.Nonce {
		t.Fatalf("signed payload: caller %x input %q: %v", got.Caller, got.Input, err)
	}
	// Anonymous payloads carry no caller and pass the envelope's check.
	anon, err := seal.SealRequest(seal.PublicKeyBytes(k), hello.info(), p, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := open(anon, hello.info()); err != nil || got.Caller != nil {
		t.Fatalf("anonymous payload: caller %x: %v", got.Caller, err)
	}
	// The signature names the request's encapsulated key: moved to another
	// request of the same caller, with the same nonce and input, it fails.
	c2, _ := seal.SealRequest(seal.PublicKeyBytes(k), hello.info(), p, caller, false)
	p2, _ := open(c2, hello.info())
	moved := p2
	moved.Signature = signatureOf(t, k, c, hello.info())
	if err := moved.CheckCaller(hello.info(), c2.Enc); !errors.Is(err, seal.ErrCallerSignature) {
		t.Fatalf("signature moved to another request: %v", err)
	}
	// Another key claimed with the caller's signature; another input; the
	// signature checked for another function.
	forged := p2
	forged.Caller = other.Public().(ed25519.PublicKey)
	if err := forged.CheckCaller(hello.info(), c2.Enc); !errors.Is(err, seal.ErrCallerSignature) {
		t.Fatalf("another caller key: %v", err)
	}
	changed := p2
	changed.Input = []byte("other input")
	if err := changed.CheckCaller(hello.info(), c2.Enc); !errors.Is(err, seal.ErrCallerSignature) {
		t.Fatalf("another input: %v", err)
	}
	if err := p2.CheckCaller(fn{hello.ns, "goodbye", 1, codeHash}.info(), c2.Enc); !errors.Is(err, seal.ErrCallerSignature) {
		t.Fatalf("another function: %v", err)
	}
}

func signatureOf(t *testing.T, k hpke.PrivateKey, c *seal.ClientContext, info []byte) []byte {
	t.Helper()
	s, err := seal.OpenRequest(k, info, c.Enc, c.Ciphertext, false)
	if err != nil {
		t.Fatal(err)
	}
	p, err := seal.DecodePayload(s.Payload)
	if err != nil {
		t.Fatal(err)
	}
	return p.Signature
}

// helloX25519 is hello's X25519 public key as every earlier version
// derived it from master: certificates issued then name it.
const helloX25519 = "510dcad639d45cacebe75d3f3f989ab56bec2fba9b80ac6869264b3fec676d6e"
