package bus

import (
	"context"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
)

// Keys returns the keys of kv (a bucket of js) that match filter (a key
// with NATS wildcards, as kv.ListKeysFiltered takes), from the subjects
// its stream holds: a snapshot the server takes at once.
// Use it, not kv.ListKeysFiltered, for a bucket whose entries change while
// it is listed: ListKeys follows a watch that stops after as many
// deliveries as there were keys when it started, so a key that changes
// during it is delivered twice and another one is missed. A deleted key
// may be listed (its delete marker is a message): reading it finds nothing.
func Keys(ctx context.Context, js jetstream.JetStream, kv jetstream.KeyValue, filter string) ([]string, error) {
	st, err := kv.Status(ctx)
	if err != nil {
		return nil, err
	}
	str, err := js.Stream(ctx, "KV_"+st.Bucket())
	if err != nil {
		return nil, err
	}
	subjectPrefix := "$KV." + st.Bucket() + "."
	info, err := str.Info(ctx, jetstream.WithSubjectFilter(subjectPrefix+filter))
	if err != nil {
		return nil, err
	}
	keys := make([]string, 0, len(info.State.Subjects))
	for subj := range info.State.Subjects {
		keys = append(keys, strings.TrimPrefix(subj, subjectPrefix))
	}
	return keys, nil
}
