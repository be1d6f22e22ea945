package state

import (
	"context"

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

// Exchange implements Transport.
func (t BusTransport) Exchange(ctx context.Context, req *AnchorRequest) (*AnchorReply, error) {
	b, err := req.AppendBinary(make([]byte, 0, 3+len(req.Namespace)+len(req.Name)+nonceSize+len(req.Sealed)))
	if err != nil {
		return nil, err
	}
	out, err := bus.CallBytes(ctx, t.Conn, bus.SubjectStateAnchor, b)
	if err != nil {
		return nil, err
	}
	return decodeReply(out, bus.SubjectStateAnchor)
}

// decodeReply decodes the anchor's answer in the wire encoding.
func decodeReply(b []byte, subject string) (*AnchorReply, error) {
	var rep AnchorReply
	if err := rep.UnmarshalBinary(b); err != nil {
		return nil, apierr.New(apierr.Internal, "malformed result on %s", subject)
	}
	return &rep, nil
}
