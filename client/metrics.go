package client

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
)

// metricsAccept asks for the Prometheus text exposition format.
const metricsAccept = "text/plain;version=0.0.4"

// Gateways returns the gateway base URLs the client was made with, without
// a trailing slash.
func (c *Client) Gateways() []string { return slices.Clone(c.gws) }

// Metrics returns the Prometheus metrics of one gateway, in the text
// exposition format, as GET gateway/metrics answers them to the client's
// API key (a platform key: the metrics name every namespace's functions).
// gateway must be one of Gateways: the key is never sent elsewhere. It does
// not fail over, since each gateway counts on its own. The metrics are the
// gateway's word, not verified: nothing in them is attested. A refusal is
// an *Error.
func (c *Client) Metrics(ctx context.Context, gateway string) ([]byte, error) {
	gw := strings.TrimRight(gateway, "/")
	if !slices.Contains(c.gws, gw) {
		return nil, fmt.Errorf("metrics of %q: not one of this client's gateways", gateway)
	}
	a, _, err := c.attempt(ctx, gw, http.MethodGet, "/metrics", nil, http.Header{"Accept": {metricsAccept}})
	if err != nil {
		return nil, fmt.Errorf("reading the metrics of %s: %w", gw, err)
	}
	if a.status != http.StatusOK {
		return nil, publicError(decodeError(a.status, a.body))
	}
	return a.body, nil
}
