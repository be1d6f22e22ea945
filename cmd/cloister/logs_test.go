package main

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"k8s.io/klog/v2"
)

// TestLibraryLogsDemoted: klog's informational lines (tessera's start-up
// chatter) are debug records of our logger, hidden at info level; its
// errors stay errors.
func TestLibraryLogsDemoted(t *testing.T) {
	var buf bytes.Buffer
	routeLibraryLogs(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})))
	t.Cleanup(func() { klog.ClearLogger() })
	klog.Infof("Failed to fetch old checkpoint: %s", "file does not exist")
	klog.Errorf("disk full")
	klog.Flush()
	out := buf.String()
	if strings.Contains(out, "old checkpoint") {
		t.Errorf("an informational klog line came out at info level: %q", out)
	}
	if !strings.Contains(out, "level=ERROR") || !strings.Contains(out, "disk full") || !strings.Contains(out, "lib=klog") {
		t.Errorf("klog's error: %q", out)
	}

	buf.Reset()
	routeLibraryLogs(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	klog.Infof("Initializing directory for POSIX log")
	klog.Flush()
	if out := buf.String(); !strings.Contains(out, "level=DEBUG") || !strings.Contains(out, "Initializing directory") {
		t.Errorf("at debug level: %q", out)
	}
}

// TestUpBanner: the banner names the URL, /metrics, the port flag and the
// next command, and asks for `keys new` only while there is no owner key.
func TestUpBanner(t *testing.T) {
	b := upBanner("http://127.0.0.1:8080", "/tmp/x/.cloister/client.env", false)
	for _, want := range []string{"http://127.0.0.1:8080\n", "http://127.0.0.1:8080/metrics", "--addr", "CLOISTER_ENV=/tmp/x/.cloister/client.env", "./cloister keys new && ./cloister fn deploy hello examples/hello-go", "NOT SECURE"} {
		if !strings.Contains(b, want) && !strings.Contains(b, strings.TrimSuffix(want, "\n")) {
			t.Errorf("banner lacks %q:\n%s", want, b)
		}
	}
	if again := upBanner("http://127.0.0.1:8080", "/tmp/x/.cloister/client.env", true); strings.Contains(again, "keys new") {
		t.Errorf("with an owner key the banner still says keys new:\n%s", again)
	}
}
