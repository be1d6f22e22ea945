package node_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/cloister-faas/cloister/client"
	"github.com/cloister-faas/cloister/internal/bundle"
)

// TestInvokeLogs: a synchronous caller that asks for the function's stderr
// gets it sealed to itself, on success and on failure; a gateway that
// alters it is caught; without asking, nothing is returned.
func TestInvokeLogs(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	e.deploy("docs", example(t, "reactor-kv-go"), func(m *bundle.Manifest) { m.ABI = bundle.ABIReactor; m.Capabilities.State = true })
	if _, err := e.c.Invoke(ctx, "docs", []byte(`{"op":"put","key":"k","value":"text"}`), client.InvokeOptions{}); err != nil {
		t.Fatal(err)
	}
	bad := []byte(`{"op":"add","key":"k"}`) // fails: the value is not an integer

	_, err := e.c.Invoke(ctx, "docs", bad, client.InvokeOptions{Logs: true})
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Code != "function_exit" || !strings.Contains(string(ce.Logs), "does not hold an integer") || ce.Receipt == nil {
		t.Fatalf("failure with logs: %v, logs %q", err, ce.Logs)
	}
	if _, err := e.c.Invoke(ctx, "docs", bad, client.InvokeOptions{}); !errors.As(err, &ce) || ce.Logs != nil {
		t.Fatalf("failure without asking: %v, logs %q", err, ce.Logs)
	}
	res, err := e.c.Invoke(ctx, "docs", []byte(`{"op":"get","key":"k"}`), client.InvokeOptions{Logs: true})
	if err != nil || res.Logs != nil || !bytes.Contains(res.Output, []byte("text")) {
		t.Fatalf("success with nothing on stderr: %v, logs %q", err, res.Logs)
	}
	if _, err := e.c.Invoke(ctx, "docs", nil, client.InvokeOptions{Logs: true, Plaintext: true}); err == nil {
		t.Fatal("logs of a plaintext invocation: no error")
	}

	// A gateway that alters the sealed logs.
	tampering, err := client.New(e.n.URL, e.n.Token, clientPolicy(e.n.Policy), client.WithHTTPClient(&http.Client{Transport: flipLogs{http.DefaultTransport}}), client.WithCallerKey(e.owner))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tampering.Invoke(ctx, "docs", bad, client.InvokeOptions{Logs: true}); !errors.Is(err, client.ErrVerification) {
		t.Fatalf("altered logs: got %v, want a verification error", err)
	}
}

// flipLogs flips a bit of the sealed "logs" in every JSON answer.
type flipLogs struct{ next http.RoundTripper }

func (f flipLogs) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := f.next.RoundTrip(r)
	if err != nil || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		return resp, err
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var m map[string]any
	if json.Unmarshal(b, &m) == nil {
		if s, ok := m["logs"].(string); ok {
			if c, err := base64.StdEncoding.DecodeString(s); err == nil && len(c) > 0 {
				c[len(c)/2] ^= 1
				m["logs"] = base64.StdEncoding.EncodeToString(c)
				b, _ = json.Marshal(m)
			}
		}
	}
	resp.Body = io.NopCloser(bytes.NewReader(b))
	resp.ContentLength = int64(len(b))
	return resp, nil
}
