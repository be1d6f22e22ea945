package state

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// noHeaders asks a direct get for the message's body alone.
var noHeaders = []byte(`{"no_hdr":true}`)

// newest reads the newest value of the bucket key name.
//
// With a connection (Options.Conn), it asks JetStream for the value alone,
// in a direct get without headers. A sealed value is stored with the
// compare-and-set header of its write (JetStream keeps a message's
// headers), so with headers the server would rebuild them for every read
// and the client parse them; a read needs only the value. Its revision is
// then unknown (Revision is 0): a read that finds the committed envelope on
// top takes the anchor's revision for it. An empty value is a delete
// marker (no honest writer stores an empty envelope), reported as not
// found.
func (f *Function) newest(ctx context.Context, name string) (jetstream.KeyValueEntry, error) {
	if f.s.direct == "" {
		return f.s.o.KV.Get(ctx, name)
	}
	f.s.o.Metrics.DirectRead()
	m, err := f.s.o.Conn.RequestWithContext(ctx, f.s.direct+name, noHeaders)
	if err != nil {
		return nil, err
	}
	if st := m.Header.Get("Status"); st != "" {
		if st == "404" {
			return nil, jetstream.ErrKeyNotFound
		}
		return nil, fmt.Errorf("direct get of %s: status %s %s", name, st, m.Header.Get("Description"))
	}
	if len(m.Data) == 0 {
		return nil, jetstream.ErrKeyNotFound
	}
	return directEntry{bucket: f.s.o.KV.Bucket(), key: name, value: m.Data}, nil
}

// directEntry is a value read without headers: no revision, time or
// operation.
type directEntry struct {
	bucket, key string
	value       []byte
}

func (d directEntry) Bucket() string                  { return d.bucket }
func (d directEntry) Key() string                     { return d.key }
func (d directEntry) Value() []byte                   { return d.value }
func (d directEntry) Revision() uint64                { return 0 }
func (d directEntry) Created() time.Time              { return time.Time{} }
func (d directEntry) Delta() uint64                   { return 0 }
func (d directEntry) Operation() jetstream.KeyValueOp { return jetstream.KeyValuePut }
