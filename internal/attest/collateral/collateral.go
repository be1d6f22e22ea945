// Package collateral fetches and caches the vendor documents that TEE
// verification needs beyond the evidence itself: AMD's VCEK/VLEK and
// ASK/ARK certificates and CRLs from the Key Distribution Service, and
// Intel's TCB info, QE identity and CRLs from the Provisioning Certification
// Service (with their issuer-chain headers).
//
// A Getter answers from, in order: an offline bundle (a JSON file of
// url → response, for air-gapped deployments and tests), its memory cache,
// its on-disk cache, and only then the network, unless it is offline.
// Collateral is public and signed by the vendor, so the caches are not
// trusted: the verifier checks every signature and every expiry. A cached
// entry older than MaxAge is fetched again; if that fails, the stale entry
// is served and the verifier decides whether it has expired.
package collateral

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"
)

// ErrUnavailable means the collateral is in no cache and cannot be fetched.
var ErrUnavailable = errors.New("collateral: unavailable")

// Response is one collateral document as served by the vendor.
type Response struct {
	URL     string              `json:"url"`
	Header  map[string][]string `json:"header,omitempty"`
	Body    []byte              `json:"body"`
	Fetched time.Time           `json:"fetched,omitzero"`
}

// Fetcher gets a URL from the network.
type Fetcher interface {
	Fetch(ctx context.Context, url string) (*Response, error)
}

// Options configure a Getter.
type Options struct {
	// Dir is the on-disk cache ("" = memory only).
	Dir string
	// Bundle holds offline responses by URL; they are served first and never expire here.
	Bundle map[string]Response
	// Offline forbids network access.
	Offline bool
	// Fetcher is the network (nil: HTTPS with a 30 s timeout).
	Fetcher Fetcher
	// MaxAge is how long a cached response is served before it is fetched
	// again (0: 12 h). CRLs and TCB info are reissued daily by the vendors.
	MaxAge time.Duration
	Now    func() time.Time
}

// Getter is safe for concurrent use.
type Getter struct {
	o   Options
	mu  sync.Mutex
	mem map[string]*Response

	hits, fetches atomic.Int64
}

// New returns a Getter.
func New(o Options) *Getter {
	if o.MaxAge <= 0 {
		o.MaxAge = 12 * time.Hour
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Fetcher == nil {
		o.Fetcher = HTTPFetcher{Client: &http.Client{Timeout: 30 * time.Second}}
	}
	return &Getter{o: o, mem: map[string]*Response{}}
}

// Offline returns a Getter that serves only bundle and never touches the network.
func Offline(bundle map[string]Response) *Getter {
	return New(Options{Bundle: bundle, Offline: true})
}

// Stats reports cache hits and network fetches so far.
func (g *Getter) Stats() (hits, fetches int64) { return g.hits.Load(), g.fetches.Load() }

// Get returns the response for url.
func (g *Getter) Get(ctx context.Context, url string) (*Response, error) {
	if r, ok := g.o.Bundle[url]; ok {
		g.hits.Add(1)
		return &r, nil
	}
	now := g.o.Now()
	g.mu.Lock()
	stale := g.mem[url]
	g.mu.Unlock()
	if stale == nil && g.o.Dir != "" {
		stale = g.readDisk(url)
		if stale != nil {
			g.mu.Lock()
			g.mem[url] = stale
			g.mu.Unlock()
		}
	}
	if stale != nil && (g.o.Offline || now.Sub(stale.Fetched) < g.o.MaxAge) {
		g.hits.Add(1)
		return stale, nil
	}
	if g.o.Offline {
		return nil, fmt.Errorf("%w: %s is not in the offline bundle or cache", ErrUnavailable, url)
	}
	g.fetches.Add(1)
	r, err := g.o.Fetcher.Fetch(ctx, url)
	if err != nil {
		if stale != nil {
			return stale, nil
		}
		return nil, fmt.Errorf("%w: fetching %s: %v", ErrUnavailable, url, err)
	}
	r.URL, r.Fetched = url, now
	g.mu.Lock()
	g.mem[url] = r
	g.mu.Unlock()
	if g.o.Dir != "" {
		_ = g.writeDisk(r) // the cache is an optimisation; the response is good without it
	}
	return r, nil
}

func (g *Getter) path(url string) string {
	h := sha256.Sum256([]byte(url))
	return filepath.Join(g.o.Dir, hex.EncodeToString(h[:16])+".json")
}

func (g *Getter) readDisk(url string) *Response {
	b, err := os.ReadFile(g.path(url))
	if err != nil {
		return nil
	}
	var r Response
	if json.Unmarshal(b, &r) != nil || r.URL != url {
		return nil
	}
	return &r
}

func (g *Getter) writeDisk(r *Response) error {
	if err := os.MkdirAll(g.o.Dir, 0o755); err != nil {
		return err
	}
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	p := g.path(r.URL)
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, p)
}

// Entries returns every response the getter holds in memory (for writing a bundle).
func (g *Getter) Entries() []Response {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]Response, 0, len(g.mem)+len(g.o.Bundle))
	for _, r := range g.o.Bundle {
		out = append(out, r)
	}
	for _, r := range g.mem {
		out = append(out, *r)
	}
	return out
}

// ReadCache returns every response in an on-disk cache directory, for
// writing an offline bundle from what a connected verifier fetched.
func ReadCache(dir string) ([]Response, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("reading collateral cache: %w", err)
	}
	var out []Response
	for _, e := range ents {
		if e.IsDir() || filepath.Ext(e.Name()) != ".json" {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("reading collateral cache: %w", err)
		}
		var r Response
		if json.Unmarshal(b, &r) != nil || r.URL == "" {
			continue // not a cache entry
		}
		out = append(out, r)
	}
	return out, nil
}

// bundleFile is the on-disk format of an offline bundle.
type bundleFile struct {
	Version   int        `json:"version"`
	Responses []Response `json:"responses"`
}

// LoadBundle reads an offline bundle written by WriteBundle.
func LoadBundle(path string) (map[string]Response, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading collateral bundle: %w", err)
	}
	var f bundleFile
	if err := json.Unmarshal(b, &f); err != nil || f.Version != 1 {
		return nil, fmt.Errorf("collateral bundle %s: not a version 1 bundle", path)
	}
	m := make(map[string]Response, len(f.Responses))
	for _, r := range f.Responses {
		if r.URL == "" {
			return nil, fmt.Errorf("collateral bundle %s: a response has no url", path)
		}
		m[r.URL] = r
	}
	return m, nil
}

// WriteBundle writes responses as an offline bundle.
func WriteBundle(path string, responses []Response) error {
	b, err := json.MarshalIndent(bundleFile{Version: 1, Responses: responses}, "", " ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// HTTPFetcher fetches over HTTPS.
type HTTPFetcher struct{ Client *http.Client }

// maxBody bounds a collateral document (CRLs are the largest, well under this).
const maxBody = 8 << 20

// Fetch GETs url and returns the body and headers of a 200 answer.
func (f HTTPFetcher) Fetch(ctx context.Context, url string) (*Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := f.Client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close() // read to the end or abandoned: the close has nothing to report
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	if err != nil {
		return nil, err
	}
	if len(body) > maxBody {
		return nil, fmt.Errorf("response larger than %d bytes", maxBody)
	}
	return &Response{Header: resp.Header, Body: body}, nil
}

// SNP adapts the getter to go-sev-guest's trust.HTTPSGetter (and its context variant).
func (g *Getter) SNP() SNPGetter { return SNPGetter{g} }

// SNPGetter serves AMD KDS URLs.
type SNPGetter struct{ g *Getter }

// Get returns the body at url.
func (s SNPGetter) Get(url string) ([]byte, error) { return s.GetContext(context.Background(), url) }

// GetContext returns the body at url.
func (s SNPGetter) GetContext(ctx context.Context, url string) ([]byte, error) {
	r, err := s.g.Get(ctx, url)
	if err != nil {
		return nil, err
	}
	return r.Body, nil
}

// TDX adapts the getter to go-tdx-guest's trust.HTTPSGetter.
func (g *Getter) TDX() TDXGetter { return TDXGetter{g} }

// TDXGetter serves Intel PCS URLs with their headers (the issuer chains).
type TDXGetter struct{ g *Getter }

// Get returns the headers and body at url.
func (t TDXGetter) Get(url string) (map[string][]string, []byte, error) {
	r, err := t.g.Get(context.Background(), url)
	if err != nil {
		return nil, nil, err
	}
	return r.Header, r.Body, nil
}
