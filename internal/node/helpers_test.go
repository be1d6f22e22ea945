package node_test

import (
	"context"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cloister-faas/cloister/internal/bus"
)

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
