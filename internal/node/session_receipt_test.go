package node_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/cloister-faas/cloister/client"
	"github.com/cloister-faas/cloister/internal/wire"
)

// TestSessionReceiptTampered: inside a session the response is
// authenticated by the session key, but its receipt travels beside the
// ciphertext, through the untrusted gateway. A gateway that alters the
// receipt's bytes or its signature, or hands back the receipt of an earlier
// call of the same session, is caught: Session.Invoke reports a
// verification error and no result.
func TestSessionReceiptTampered(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	e.deploy("echo", fixture(t, "echo.wasm"), nil)

	tr := &receiptTamperer{next: http.DefaultTransport}
	c, err := client.New(e.n.URL, e.n.Token, clientPolicy(e.n.Policy), client.WithHTTPClient(&http.Client{Transport: tr}), client.WithCallerKey(e.owner))
	if err != nil {
		t.Fatal(err)
	}
	s, err := c.OpenSession(ctx, "echo", 0)
	if err != nil {
		t.Fatal(err)
	}
	res, err := s.Invoke(ctx, []byte("first"))
	if err != nil || string(res.Output) != "first" {
		t.Fatalf("untouched call: %q, %v", res.Output, err)
	}
	for _, tc := range []struct {
		name string
		edit func(old, r *wire.SealedResponse)
	}{
		{"the metered instructions inflated", func(_, r *wire.SealedResponse) {
			// What only the signature protects: a gateway billing more.
			i := bytes.Index(r.Receipt.Receipt, []byte(`"instructions":`)) + len(`"instructions":`)
			r.Receipt.Receipt = append(r.Receipt.Receipt[:i:i], append([]byte("9"), r.Receipt.Receipt[i:]...)...)
		}},
		{"the signature altered", func(_, r *wire.SealedResponse) { r.Receipt.Signature[0] ^= 1 }},
		{"an earlier call's receipt", func(old, r *wire.SealedResponse) { r.Receipt = old.Receipt }},
	} {
		tr.set(tc.edit)
		res, err := s.Invoke(ctx, []byte(tc.name))
		if !errors.Is(err, client.ErrVerification) || res != nil {
			t.Errorf("%s: got %v (result %v), want a verification error and no result", tc.name, err, res)
		}
		tr.set(nil)
	}
	if !tr.edited() {
		t.Fatal("the transport altered no response: the test proves nothing")
	}
	// The session still works once the gateway behaves.
	if res, err := s.Invoke(ctx, []byte("last")); err != nil || string(res.Output) != "last" {
		t.Fatalf("after the tampering: %q, %v", res.Output, err)
	}
}

// receiptTamperer edits the sealed responses of invocations as a hostile
// gateway could. It keeps the last untouched response to replay its receipt.
type receiptTamperer struct {
	next http.RoundTripper

	mu    sync.Mutex
	edit  func(old, r *wire.SealedResponse)
	last  *wire.SealedResponse
	count int
}

func (t *receiptTamperer) set(edit func(old, r *wire.SealedResponse)) {
	t.mu.Lock()
	t.edit = edit
	t.mu.Unlock()
}

func (t *receiptTamperer) edited() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.count == 3
}

func (t *receiptTamperer) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(r)
	if err != nil || resp.StatusCode != http.StatusOK || !strings.HasSuffix(r.URL.Path, "/invoke") {
		return resp, err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	var sr wire.SealedResponse
	if json.Unmarshal(b, &sr) == nil && sr.Receipt != nil {
		t.mu.Lock()
		if t.edit != nil && t.last != nil {
			t.edit(t.last, &sr)
			t.count++
			b, err = json.Marshal(sr)
		} else {
			t.last = &sr
		}
		t.mu.Unlock()
		if err != nil {
			return nil, err
		}
	}
	resp.Body = io.NopCloser(bytes.NewReader(b))
	resp.ContentLength = int64(len(b))
	return resp, nil
}
