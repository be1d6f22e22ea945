package client

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/cloister-faas/cloister/internal/seal"
	"github.com/cloister-faas/cloister/internal/wire"
)

// Session is an open session with one function version (T-FaaS connection
// context). It is opened with one HPKE exchange; each later request is
// sealed with AES-GCM under a key exported from that exchange, which no
// party outside the client and the attested workers holds. Any worker with
// the function key can serve it. Safe for concurrent use.
type Session struct {
	c       *Client
	fn      *Function
	key     *seal.Symmetric // the session key
	ticket  []byte
	expires time.Time
}

// OpenSession opens a session with a function version (0 = latest).
func (c *Client) OpenSession(ctx context.Context, name string, version int) (*Session, error) {
	fn, err := c.Function(ctx, name, version)
	if err != nil {
		return nil, err
	}
	cc, err := seal.SealRequest(fn.hpkeKey, seal.Info(fn.Namespace, fn.Name, fn.Version, fn.CodeHash), seal.NewPayload(nil, c.now()), c.caller, true)
	if err != nil {
		return nil, err
	}
	sr := wire.SealedRequest{Mode: wire.ModeSessionOpen, Version: fn.Version, Enc: cc.Enc, Ciphertext: cc.Ciphertext}
	body, err := json.Marshal(sr)
	if err != nil {
		return nil, err
	}
	var resp wire.SealedResponse
	if err := c.do(ctx, http.MethodPost, "/v1/functions/"+url.PathEscape(fn.Name)+"/sessions", body, wire.SealedContentType, &resp); err != nil {
		return nil, c.verifyErrorReceipt(ctx, err, fn, "")
	}
	reqHash := seal.RequestHash(sr.Mode, sr.Enc, nil, sr.Ciphertext)
	// The acknowledgement decrypts only under the key exported from our
	// HPKE context, proving that a holder of the function key answered.
	if _, err := seal.OpenSymmetric(cc.ResponseKey, seal.AADResponse, []byte(reqHash), resp.Ciphertext); err != nil {
		return nil, fmt.Errorf("%w: session acknowledgement: %w", ErrVerification, err)
	}
	if len(resp.Ticket) == 0 {
		return nil, fmt.Errorf("%w: no session ticket", ErrVerification)
	}
	key, err := seal.NewSymmetric(cc.SessionKey)
	if err != nil {
		return nil, err
	}
	return &Session{c: c, fn: fn, key: key, ticket: resp.Ticket, expires: resp.TicketExpires}, nil
}

// Expires reports when the session ends.
func (s *Session) Expires() time.Time { return s.expires }

// Function returns the session's function version.
func (s *Session) Function() *Function { return s.fn }

// Invoke runs the function once within the session.
func (s *Session) Invoke(ctx context.Context, input []byte) (*Result, error) {
	payload := seal.NewPayload(input, s.c.now()).Encode()
	ct, err := s.key.Seal(seal.AADRequest, s.ticket, payload)
	if err != nil {
		return nil, err
	}
	sr := wire.SealedRequest{Mode: wire.ModeSession, Version: s.fn.Version, Ticket: s.ticket, Ciphertext: ct}
	return s.c.sendSealed(ctx, s.fn, "/invoke", sr, s.key, seal.RequestHash(sr.Mode, nil, sr.Ticket, sr.Ciphertext))
}
