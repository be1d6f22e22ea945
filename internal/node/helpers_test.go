package node_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cloister-faas/cloister/client"
	"github.com/cloister-faas/cloister/internal/attest"
	"github.com/cloister-faas/cloister/internal/bus"
)

// clientPolicy is a node's client policy (or a test's edit of it) as the
// client takes it: the same JSON document, which client.Policy mirrors
// (client's TestPublicJSON).
func clientPolicy(p attest.Policy) client.Policy {
	b, err := json.Marshal(p)
	if err == nil {
		var cp client.Policy
		if err = json.Unmarshal(b, &cp); err == nil {
			return cp
		}
	}
	panic(err)
}

func getRegistry(ctx context.Context, nc *nats.Conn, key string) ([]byte, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	kv, err := js.KeyValue(ctx, bus.BucketRegistry)
	if err != nil {
		return nil, err
	}
	e, err := kv.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	return e.Value(), nil
}

func putObject(ctx context.Context, nc *nats.Conn, name string, b []byte) error {
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	os, err := js.ObjectStore(ctx, bus.BucketBundles)
	if err != nil {
		return err
	}
	_, err = os.PutBytes(ctx, name, b)
	return err
}

// getWithKey GETs url with an API key and returns the status and body.
func getWithKey(t testing.TB, url, key string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

// scrape reads a gateway's /metrics with a platform key (token).
func scrape(t testing.TB, url, token string) []byte {
	t.Helper()
	code, b := getWithKey(t, url+"/metrics", token)
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d %s", code, b)
	}
	return b
}
