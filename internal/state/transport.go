package state

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/bus"
)

// Transport carries anchor requests to the anchor (on the bus, the
// coordinator; in tests, an Anchor in the same process).
type Transport interface {
	Exchange(ctx context.Context, req *AnchorRequest) (*AnchorReply, error)
}

// LocalTransport calls an Anchor directly.
type LocalTransport struct{ Anchor *Anchor }

// Exchange implements Transport.
func (t LocalTransport) Exchange(_ context.Context, req *AnchorRequest) (*AnchorReply, error) {
	return t.Anchor.Handle(req)
}

// BusTransport reaches the coordinator's anchor on the bus, in the wire
// encoding (AnchorRequest.AppendBinary) without a JSON envelope
// (bus.CallBytes).
type BusTransport struct{ Conn *nats.Conn }

// Exchange implements Transport. While no coordinator serves the anchor
// (one paused for a JetStream election, or failing over to a standby), it
// sends the request again until ctx ends: nobody received it, so it cannot
// have been applied, and the call that waits for it goes on when the
// anchor is back instead of failing.
func (t BusTransport) Exchange(ctx context.Context, req *AnchorRequest) (*AnchorReply, error) {
	b, err := req.AppendBinary(make([]byte, 0, 3+len(req.Namespace)+len(req.Name)+nonceSize+len(req.Sealed)))
	if err != nil {
		return nil, err
	}
	for wait := noResponderWait; ; wait = min(2*wait, noResponderWaitMax) {
		out, err := bus.CallBytes(ctx, t.Conn, bus.SubjectStateAnchor, b)
		if err == nil {
			return decodeReply(out, bus.SubjectStateAnchor)
		}
		if !errors.Is(err, nats.ErrNoResponders) {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(wait):
		}
	}
}

// The waits between requests that found no anchor: short at first (a
// coordinator resubscribing after a pause), then at most
// noResponderWaitMax, a small part of a failover.
const (
	noResponderWait    = 25 * time.Millisecond
	noResponderWaitMax = 250 * time.Millisecond
)

// decodeReply decodes the anchor's answer in the wire encoding.
func decodeReply(b []byte, subject string) (*AnchorReply, error) {
	var rep AnchorReply
	if err := rep.UnmarshalBinary(b); err != nil {
		return nil, apierr.New(apierr.Internal, "malformed result on %s", subject)
	}
	return &rep, nil
}
