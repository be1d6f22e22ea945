package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/nats-io/nats.go"

	"github.com/cloister-faas/cloister/internal/apierr"
)

// reply is the envelope of every request/reply answer on the bus.
type reply struct {
	Error  *apierr.Error   `json:"error,omitempty"`
	Result json.RawMessage `json:"result,omitempty"`
}

// Handler answers one request. A returned *apierr.Error reaches the caller
// with its code; any other error is logged and reported as internal.
type Handler func(ctx context.Context, req []byte) (any, error)

// Serve subscribes h to subject in queue group queue. Each message is handled
// in its own goroutine, bounded by limit (0 = unbounded); ctx ends the
// subscription's handlers.
func Serve(ctx context.Context, nc *nats.Conn, subject, queue string, limit int, log *slog.Logger, h Handler) (*nats.Subscription, error) {
	return serve(ctx, nc, subject, queue, limit, nil, func(m *nats.Msg) { Respond(ctx, m, log, h) }, func(m *nats.Msg, e *apierr.Error) {
		out, _ := json.Marshal(reply{Error: e}) // a code and a message: Marshal cannot fail
		if err := m.Respond(out); err != nil {
			log.Warn("sending reply", "subject", m.Subject, "err", err)
		}
	})
}

// serve runs respond for each message of subject in its own goroutine,
// bounded by limit; refuse answers a message that arrives once ctx ended.
// accept, if not nil, sees each message first, in the order they arrive
// and before any waits for its turn: when it reports that it handled the
// message, nothing else is done with it.
func serve(ctx context.Context, nc *nats.Conn, subject, queue string, limit int, accept func(*nats.Msg) (handled bool), respond func(*nats.Msg), refuse func(*nats.Msg, *apierr.Error)) (*nats.Subscription, error) {
	var sem chan struct{}
	if limit > 0 {
		sem = make(chan struct{}, limit)
	}
	sub, err := nc.QueueSubscribe(subject, queue, func(m *nats.Msg) {
		if accept != nil && accept(m) {
			return
		}
		if sem != nil {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				// Say so rather than let the caller wait for its timeout:
				// nothing ran, so the caller may go elsewhere.
				refuse(m, apierr.New(apierr.Unavailable, "the service on %s is stopping", subject))
				return
			}
		}
		go func() {
			if sem != nil {
				defer func() { <-sem }()
			}
			respond(m)
		}()
	})
	if err != nil {
		return nil, fmt.Errorf("subscribing to %s: %w", subject, err)
	}
	// Once Serve returns, the server knows of the subscription: a request
	// from another connection finds it.
	if err := nc.Flush(); err != nil {
		_ = sub.Unsubscribe() // the Flush error is the one to return
		return nil, fmt.Errorf("subscribing to %s: %w", subject, err)
	}
	return sub, nil
}

// Respond runs h for m and sends the reply envelope.
func Respond(ctx context.Context, m *nats.Msg, log *slog.Logger, h Handler) {
	var rep reply
	res, err := h(ctx, m.Data)
	if err != nil {
		var ae *apierr.Error
		if !errors.As(err, &ae) {
			log.Error("handler failed", "subject", m.Subject, "err", err)
		}
		rep.Error = apierr.From(err)
	} else if b, err := json.Marshal(res); err != nil {
		log.Error("encoding reply", "subject", m.Subject, "err", err)
		rep.Error = apierr.From(err)
	} else {
		rep.Result = b
	}
	out, _ := json.Marshal(rep) // an *apierr.Error or JSON just encoded: Marshal cannot fail
	if err := m.Respond(out); err != nil {
		log.Warn("sending reply", "subject", m.Subject, "err", err)
	}
}

// Call sends req to subject and decodes the answer into resp. Remote errors
// come back as *apierr.Error; a missing responder as apierr.NoWorker.
func Call(ctx context.Context, nc *nats.Conn, subject string, req, resp any) error {
	b, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("encoding request: %w", err)
	}
	m, err := request(ctx, nc, subject, b)
	if err != nil {
		return err
	}
	var rep reply
	if err := json.Unmarshal(m.Data, &rep); err != nil {
		return apierr.New(apierr.Internal, "malformed reply on %s", subject)
	}
	if rep.Error != nil {
		return rep.Error
	}
	if resp == nil {
		return nil
	}
	if err := json.Unmarshal(rep.Result, resp); err != nil {
		return apierr.New(apierr.Internal, "malformed result on %s", subject)
	}
	return nil
}

// request sends b to subject and maps transport failures to API errors.
func request(ctx context.Context, nc *nats.Conn, subject string, b []byte) (*nats.Msg, error) {
	m, err := nc.RequestWithContext(ctx, subject, b)
	return m, requestError(err, subject)
}

// requestError maps a request's transport failure to an API error.
func requestError(err error, subject string) error {
	switch {
	case errors.Is(err, nats.ErrNoResponders) && (subject == SubjectInvoke || strings.HasPrefix(subject, SubjectInvokeWorker)):
		return apierr.New(apierr.NoWorker, "no admitted worker is serving invocations")
	case errors.Is(err, nats.ErrNoResponders):
		return apierr.New(apierr.Unavailable, "no service is listening on %s", subject)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
		return apierr.New(apierr.Timeout, "no answer on %s in time", subject)
	case err != nil:
		return apierr.New(apierr.Unavailable, "bus request to %s failed", subject)
	}
	return nil
}

// HeaderError carries a BytesHandler's error (an apierr.Error in JSON) on
// its reply, whose body is then empty.
const HeaderError = "Cloister-Error"

// BytesHandler answers one request with bytes in its own encoding, for the
// hot paths (ledger appends, state anchoring) where a JSON envelope around
// binary data costs more than the work. Errors are as for Handler.
type BytesHandler func(ctx context.Context, req []byte) ([]byte, error)

// ServeBytes is Serve for a BytesHandler; callers use CallBytes.
func ServeBytes(ctx context.Context, nc *nats.Conn, subject, queue string, limit int, log *slog.Logger, h BytesHandler) (*nats.Subscription, error) {
	respond, refuse := bytesResponder(ctx, log, h)
	return serve(ctx, nc, subject, queue, limit, nil, respond, refuse)
}

// bytesResponder returns the functions that answer a BytesHandler's
// requests: respond runs h, refuse sends an error.
func bytesResponder(ctx context.Context, log *slog.Logger, h BytesHandler) (respond func(*nats.Msg), refuse func(*nats.Msg, *apierr.Error)) {
	refuse = func(m *nats.Msg, e *apierr.Error) {
		b, _ := json.Marshal(e) // a code and a message: Marshal cannot fail
		r := nats.NewMsg(m.Reply)
		r.Header.Set(HeaderError, string(b))
		if err := m.RespondMsg(r); err != nil {
			log.Warn("sending reply", "subject", m.Subject, "err", err)
		}
	}
	respond = func(m *nats.Msg) {
		out, err := h(ctx, m.Data)
		if err != nil {
			var ae *apierr.Error
			if !errors.As(err, &ae) {
				log.Error("handler failed", "subject", m.Subject, "err", err)
			}
			refuse(m, apierr.From(err))
			return
		}
		if err := m.Respond(out); err != nil {
			log.Warn("sending reply", "subject", m.Subject, "err", err)
		}
	}
	return respond, refuse
}

// CallBytes sends req to a ServeBytes handler on subject and returns its
// answer. Errors are as for Call.
func CallBytes(ctx context.Context, nc *nats.Conn, subject string, req []byte) ([]byte, error) {
	m, err := request(ctx, nc, subject, req)
	if err != nil {
		return nil, err
	}
	return bytesReply(m, subject)
}

// bytesReply returns a BytesHandler's answer, or the error it sent.
func bytesReply(m *nats.Msg, subject string) ([]byte, error) {
	if e := m.Header.Get(HeaderError); e != "" {
		var ae apierr.Error
		if err := json.Unmarshal([]byte(e), &ae); err != nil || ae.Code == "" {
			return nil, apierr.New(apierr.Internal, "malformed error reply on %s", subject)
		}
		return nil, &ae
	}
	return m.Data, nil
}
