package wire

import (
	"bytes"
	"testing"
	"time"
)

// TestKeyReleaseFormats pins the key-release formats that the coordinator
// and workers must agree on byte for byte.
func TestKeyReleaseFormats(t *testing.T) {
	for _, c := range []struct {
		name      string
		got, want []byte
	}{
		{"key release info", KeyReleaseInfo("w-1", "ns", "fn", 3), []byte("cloister/v1/key-release\x00w-1\x00cloister/v1/request\x00ns\x00fn\x003\x00")},
		{"state key release info", StateKeyReleaseInfo("w-1", "ns", "fn"), []byte("cloister/v1/state-key-release\x00w-1\x00ns\x00fn")},
	} {
		if !bytes.Equal(c.got, c.want) {
			t.Errorf("%s: got %q, want %q", c.name, c.got, c.want)
		}
	}
	if bytes.Equal(KeyReleaseInfo("w-1", "ns", "fn", 3), KeyReleaseInfo("w-2", "ns", "fn", 3)) {
		t.Error("key release info does not bind the worker")
	}
	req := FunctionKeyRequest{Namespace: "ns", Name: "fn", Version: 1, Time: time.Unix(0, 0).UTC()}
	unsigned := KeyRequestMessage(req)
	req.Signature = []byte("sig")
	if !bytes.Equal(KeyRequestMessage(req), unsigned) {
		t.Error("the signed message covers the signature")
	}
	if !bytes.HasPrefix(unsigned, []byte("cloister-fnkey-request-v1\n{")) {
		t.Errorf("key request message %q lacks its domain", unsigned)
	}
}
