package state

import (
	"context"
	"encoding/json"

	"github.com/nats-io/nats.go"

	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/bus"
)

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

// decodeReply decodes the anchor's answer: the reply's wire encoding, or,
// from a coordinator that serves the anchor with bus.Serve, a JSON
// envelope around a JSON AnchorReply (see the coordinator's
// handleStateAnchor).
func decodeReply(b []byte, subject string) (*AnchorReply, error) {
	var rep AnchorReply
	if len(b) > 0 && b[0] == '{' {
		var env struct {
			Error  *apierr.Error   `json:"error"`
			Result json.RawMessage `json:"result"`
		}
		if err := json.Unmarshal(b, &env); err != nil {
			return nil, apierr.New(apierr.Internal, "malformed reply on %s", subject)
		}
		if env.Error != nil {
			return nil, env.Error
		}
		if err := json.Unmarshal(env.Result, &rep); err != nil {
			return nil, apierr.New(apierr.Internal, "malformed result on %s", subject)
		}
		return &rep, nil
	}
	if err := rep.UnmarshalBinary(b); err != nil {
		return nil, apierr.New(apierr.Internal, "malformed result on %s", subject)
	}
	return &rep, nil
}
