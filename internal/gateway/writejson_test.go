package gateway

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestWriteJSONLength: an answer larger than net/http's 2 KiB write buffer
// goes with its length, not in chunks, so that a client reads it into one
// buffer; it ends with a newline, as it did from json.Encoder.
func TestWriteJSONLength(t *testing.T) {
	big := map[string]string{"ct": strings.Repeat("x", 8<<10)}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, big)
	}))
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.ContentLength != int64(len(b)) || len(resp.TransferEncoding) != 0 {
		t.Errorf("got Content-Length %d and Transfer-Encoding %v for %d bytes, want the length and no chunks", resp.ContentLength, resp.TransferEncoding, len(b))
	}
	var got map[string]string
	if err := json.Unmarshal(b, &got); err != nil || got["ct"] != big["ct"] || !strings.HasSuffix(string(b), "}\n") {
		t.Errorf("body: %v (ends %q)", err, b[len(b)-2:])
	}

	// A value that cannot be encoded is an internal error, not half an answer.
	rec := httptest.NewRecorder()
	writeJSON(rec, http.StatusOK, map[string]any{"f": func() {}})
	if rec.Code != http.StatusInternalServerError || !strings.Contains(rec.Body.String(), `"internal"`) {
		t.Errorf("unencodable value: got %d %s, want 500 internal", rec.Code, rec.Body)
	}
}
