package state

import (
	"context"

	"github.com/nats-io/nats.go"

	"github.com/cloister-faas/cloister/internal/bus"
)

// BusTransport reaches the coordinator's anchor on the bus.
type BusTransport struct{ Conn *nats.Conn }

// Exchange implements Transport.
func (t BusTransport) Exchange(ctx context.Context, req *AnchorRequest) (*AnchorReply, error) {
	var rep AnchorReply
	if err := bus.Call(ctx, t.Conn, bus.SubjectStateAnchor, req, &rep); err != nil {
		return nil, err
	}
	return &rep, nil
}
