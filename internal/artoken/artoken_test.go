package artoken

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"
)

func claims(now time.Time) Claims {
	return Claims{Issuer: Issuer, Subject: "ab", IssuedAt: now.Unix(), Expires: now.Add(time.Minute).Unix(), Profile: Profile,
		Status: "affirming", TEE: "sev-snp", TCB: "bl=3,tee=0,snp=8,ucode=115", Measurement: "5a", ManifestHash: "cd", EvidenceHash: "ef"}
}

func TestIssueVerify(t *testing.T) {
	pub, key, _ := ed25519.GenerateKey(rand.Reader)
	otherPub, otherKey, _ := ed25519.GenerateKey(rand.Reader)
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	tok, err := Issue(key, claims(now))
	if err != nil {
		t.Fatal(err)
	}
	c, err := Verify(tok, pub, now.Add(30*time.Second))
	if err != nil || c.TEE != "sev-snp" || c.ManifestHash != "cd" {
		t.Fatalf("verify: %+v %v", c, err)
	}
	parts := strings.Split(tok, ".")
	noneHeader := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`))
	forged, _ := Issue(otherKey, claims(now))
	flipped := []byte(tok)
	flipped[len(parts[0])+5] ^= 1
	cases := []struct {
		name string
		tok  string
		key  ed25519.PublicKey
		at   time.Time
		want error
	}{
		{"signed by another key", forged, pub, now, ErrSignature},
		{"verified with another key", tok, otherPub, now, ErrSignature},
		{"payload changed", string(flipped), pub, now, ErrSignature},
		{"alg none", noneHeader + "." + parts[1] + ".", pub, now, ErrMalformed},
		{"expired", tok, pub, now.Add(2 * time.Minute), ErrExpired},
		{"not yet valid", tok, pub, now.Add(-time.Minute), ErrExpired},
		{"two parts", parts[0] + "." + parts[1], pub, now, ErrMalformed},
		{"bad base64", "!!." + parts[1] + "." + parts[2], pub, now, ErrMalformed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Verify(tc.tok, tc.key, tc.at); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
	bad := claims(now)
	bad.Profile = "other"
	tok2, _ := Issue(key, bad)
	if _, err := Verify(tok2, pub, now); !errors.Is(err, ErrMalformed) {
		t.Fatalf("wrong profile: got %v", err)
	}
	bad = claims(now)
	bad.Expires = bad.IssuedAt
	if _, err := Issue(key, bad); err == nil {
		t.Fatal("issued a token without a validity period")
	}
}

func FuzzVerify(f *testing.F) {
	pub, key, _ := ed25519.GenerateKey(rand.Reader)
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	tok, _ := Issue(key, claims(now))
	f.Add(tok)
	f.Add("a.b.c")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := Verify(s, pub, now)
		if err == nil && (c.Profile != Profile || c.Expires == 0) {
			t.Fatalf("accepted a token with profile %q exp %d", c.Profile, c.Expires)
		}
	})
}
