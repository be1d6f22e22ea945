package console

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// The metrics page's scraper: every ScrapeInterval it reads the Prometheus
// metrics of each gateway (through the client, with the API key) and of
// each extra endpoint (Config.MetricsURLs, with no credential), and keeps
// the last MetricsPoints intervals, each computed from the counters'
// increase since the scrape before. It starts on the first GET
// /api/metrics and stops with Server.Close.
//
// Metrics are the platform's word: nothing in them is attested, and the
// page marks them so.

const (
	// DefaultScrapeInterval is how often the console scrapes, by default.
	DefaultScrapeInterval = 5 * time.Second
	// MetricsPoints is how many intervals the console keeps: 15 minutes
	// at the default interval.
	MetricsPoints = 180
	// maxMetricsBody bounds a scrape read from an extra endpoint.
	maxMetricsBody = 16 << 20
)

// The metrics the page charts (internal/gateway, internal/worker).
const (
	mHTTPRequests       = "cloister_http_requests_total"  // {route, code}
	mHTTPSeconds        = "cloister_http_request_seconds" // histogram {route}
	mRefusals           = "cloister_refusals_total"       // {code}
	mWorkerInvocations  = "cloister_worker_invocations_total"
	mWorkerSeconds      = "cloister_worker_invocation_seconds" // histogram {mode}
	mPoolSandboxes      = "cloister_pool_sandboxes"            // gauge {namespace, function, version, state}
	mWorkerSlotsInUse   = "cloister_worker_slots_in_use"
	mWorkerSlotsWaiting = "cloister_worker_slots_waiting"
)

// MetricsView is the answer of GET /api/metrics.
type MetricsView struct {
	// IntervalSeconds is the scrape interval.
	IntervalSeconds float64 `json:"interval_seconds"`
	// Capacity is how many points the console keeps at most.
	Capacity int            `json:"capacity"`
	Sources  []MetricSource `json:"sources"`
	// Points are the intervals, oldest first.
	Points []MetricsPoint `json:"points"`
	Note   string         `json:"note"`
}

// MetricSource is one scraped endpoint and how its last scrape went.
type MetricSource struct {
	URL string `json:"url"`
	// Auth says what the scrape sends: "api key" (a gateway, through the
	// client) or "none" (an extra endpoint).
	Auth       string    `json:"auth"`
	LastScrape time.Time `json:"last_scrape,omitzero"`
	Error      string    `json:"error,omitempty"`
}

// MetricsPoint is one interval: from the scrape before to the one at
// Time, summed over the sources. A rate or a quantile is null when no
// source had two scrapes to compare, or, for a quantile, when nothing was
// observed in the interval.
type MetricsPoint struct {
	Time time.Time `json:"t"`
	// Invocations is the workers' invocations per second
	// (cloister_worker_invocations_total), Requests the gateways' HTTP
	// requests per second (cloister_http_requests_total).
	Invocations *float64 `json:"invocations_per_s"`
	Requests    *float64 `json:"requests_per_s"`
	// P50 and P99 are the latency, in seconds, of the gateways' invoke
	// routes (cloister_http_request_seconds, routes ending in /invoke);
	// WorkerP50 and WorkerP99 the workers' (cloister_worker_invocation_seconds).
	P50       *float64 `json:"p50_s"`
	P99       *float64 `json:"p99_s"`
	WorkerP50 *float64 `json:"worker_p50_s"`
	WorkerP99 *float64 `json:"worker_p99_s"`
	// Errors counts the errors in the interval by code: "gateway CODE"
	// for the gateways' refusals (cloister_refusals_total), "worker
	// STATUS" for the invocations a worker ended with another status than
	// ok. A failed call can be counted by both.
	Errors map[string]float64 `json:"errors"`
	// Pools is the reactor pools' sandboxes by state (idle, busy), summed
	// over functions and workers, at Time.
	Pools        map[string]float64 `json:"pools"`
	SlotsInUse   *float64           `json:"slots_in_use"`
	SlotsWaiting *float64           `json:"slots_waiting"`
	// Error is why a source's scrape failed, if one did.
	Error string `json:"error,omitempty"`
}

// metricsSource is one endpoint the console scrapes.
type metricsSource struct {
	url   string
	auth  string
	fetch func(ctx context.Context) ([]byte, error)
}

// metricsScraper keeps the series. Its lock guards the fields below mu;
// the scrape itself runs outside it.
type metricsScraper struct {
	sources  []metricsSource
	interval time.Duration
	now      func() time.Time
	onError  func(url, err string) // a source's error changed; "" when it recovered

	mu      sync.Mutex
	started bool
	closed  bool
	cancel  context.CancelFunc
	done    chan struct{}
	prev    []*scrape // each source's last good scrape
	status  []MetricSource
	points  []MetricsPoint
}

func newMetricsScraper(cfg Config) *metricsScraper {
	m := &metricsScraper{interval: cfg.ScrapeInterval, now: time.Now}
	if m.interval <= 0 {
		m.interval = DefaultScrapeInterval
	}
	c := cfg.Client
	for _, gw := range c.Gateways() {
		m.sources = append(m.sources, metricsSource{url: gw + "/metrics", auth: "api key",
			fetch: func(ctx context.Context) ([]byte, error) { return c.Metrics(ctx, gw) }})
	}
	hc := cfg.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: defaultHealthTimeout}
	}
	for _, u := range cfg.MetricsURLs {
		m.sources = append(m.sources, metricsSource{url: u, auth: "none",
			fetch: func(ctx context.Context) ([]byte, error) { return fetchMetrics(ctx, hc, u) }})
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m.onError = func(url, err string) {
		if err == "" {
			log.Info("metrics scrape recovered", "url", url)
		} else {
			log.Warn("metrics scrape failed", "url", url, "err", err)
		}
	}
	m.init()
	return m
}

func (m *metricsScraper) init() {
	m.prev = make([]*scrape, len(m.sources))
	m.status = make([]MetricSource, len(m.sources))
	for i, s := range m.sources {
		m.status[i] = MetricSource{URL: s.url, Auth: s.auth}
	}
}

// fetchMetrics reads an extra endpoint, with no credential.
func fetchMetrics(ctx context.Context, hc *http.Client, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close() // read here: the close has nothing to report
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: HTTP %d", url, resp.StatusCode)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxMetricsBody+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", url, err)
	}
	if len(b) > maxMetricsBody {
		return nil, fmt.Errorf("%s: more than %d bytes of metrics", url, maxMetricsBody)
	}
	return b, nil
}

// start starts scraping, once, unless the scraper was closed.
func (m *metricsScraper) start() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.started || m.closed {
		return
	}
	m.started = true
	ctx, cancel := context.WithCancel(context.Background())
	m.cancel, m.done = cancel, make(chan struct{})
	go m.run(ctx)
}

// close stops scraping and waits for the scrape under way.
func (m *metricsScraper) close() {
	m.mu.Lock()
	m.closed = true
	cancel, done := m.cancel, m.done
	m.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}

func (m *metricsScraper) run(ctx context.Context) {
	defer close(m.done)
	t := time.NewTicker(m.interval)
	defer t.Stop()
	for {
		m.scrapeOnce(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// scrapeOnce scrapes every source, in parallel, and adds a point.
func (m *metricsScraper) scrapeOnce(parent context.Context) {
	timeout := min(max(m.interval, 2*time.Second), 10*time.Second)
	ctx, cancel := context.WithTimeout(parent, timeout)
	defer cancel()
	cur := make([]*scrape, len(m.sources))
	errs := make([]error, len(m.sources))
	var wg sync.WaitGroup
	for i, s := range m.sources {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b, err := s.fetch(ctx)
			if err == nil {
				cur[i], err = parseMetrics(b)
			}
			if err != nil {
				errs[i], cur[i] = err, nil
			}
		}()
	}
	wg.Wait()
	if parent.Err() != nil {
		return // closing: no point from a cut scrape
	}
	now := m.now()
	for _, c := range cur {
		if c != nil {
			c.at = now
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.add(now, cur, errs)
}

// add computes the point at now from each source's scrape (nil where it
// failed, with its error in errs) against the one before, and keeps it.
// Called with m.mu held.
func (m *metricsScraper) add(now time.Time, cur []*scrape, errs []error) {
	p := MetricsPoint{Time: now}
	var rates bool
	var inv, req float64
	var gwHist, wHist histDelta
	errors := map[string]float64{}
	var msgs []string
	for i := range m.sources {
		st := &m.status[i]
		if errs[i] != nil {
			msg := errs[i].Error()
			msgs = append(msgs, m.sources[i].url+": "+msg)
			if st.Error != msg && m.onError != nil {
				m.onError(m.sources[i].url, msg)
			}
			st.Error = msg
			continue
		}
		if st.Error != "" && m.onError != nil {
			m.onError(m.sources[i].url, "")
		}
		st.Error, st.LastScrape = "", cur[i].at
		c := cur[i]
		if p.Pools == nil {
			p.Pools = map[string]float64{}
		}
		for state, v := range c.pools {
			p.Pools[state] += v
		}
		if c.hasSlots {
			p.SlotsInUse = addPtr(p.SlotsInUse, c.slotsInUse)
			p.SlotsWaiting = addPtr(p.SlotsWaiting, c.slotsWaiting)
		}
		prev := m.prev[i]
		m.prev[i] = c
		if prev == nil {
			continue // a baseline: nothing to compare with yet
		}
		dt := c.at.Sub(prev.at).Seconds()
		if dt <= 0 {
			continue
		}
		rates = true
		for k, v := range c.counters {
			d := counterDelta(v.value, prev.counters, k)
			switch k.metric {
			case mWorkerInvocations:
				inv += d / dt
				if v.label != "ok" && d > 0 {
					errors["worker "+v.label] += d
				}
			case mHTTPRequests:
				req += d / dt
			case mRefusals:
				if d > 0 {
					errors["gateway "+v.label] += d
				}
			}
		}
		for k, h := range c.hists {
			var into *histDelta
			switch k.metric {
			case mHTTPSeconds:
				into = &gwHist
			case mWorkerSeconds:
				into = &wHist
			default:
				continue
			}
			into.add(h, prev.hists[k])
		}
	}
	if rates {
		p.Invocations, p.Requests, p.Errors = &inv, &req, errors
		p.P50, p.P99 = gwHist.quantile(0.5), gwHist.quantile(0.99)
		p.WorkerP50, p.WorkerP99 = wHist.quantile(0.5), wHist.quantile(0.99)
	}
	p.Error = strings.Join(msgs, "; ")
	if len(m.points) == MetricsPoints {
		copy(m.points, m.points[1:])
		m.points = m.points[:MetricsPoints-1]
	}
	m.points = append(m.points, p)
}

func addPtr(p *float64, v float64) *float64 {
	if p != nil {
		v += *p
	}
	return &v
}

// view returns what GET /api/metrics answers.
func (m *metricsScraper) view() MetricsView {
	m.mu.Lock()
	defer m.mu.Unlock()
	v := MetricsView{IntervalSeconds: m.interval.Seconds(), Capacity: MetricsPoints,
		Sources: slices.Clone(m.status), Points: slices.Clone(m.points),
		Note: "The gateways' and workers' Prometheus metrics: the platform's word, not verified."}
	if v.Sources == nil {
		v.Sources = []MetricSource{}
	}
	if v.Points == nil {
		v.Points = []MetricsPoint{}
	}
	return v
}

// metricsAPI answers GET /api/metrics, starting the scraper on the first
// request.
func (s *Server) metricsAPI(w http.ResponseWriter, r *http.Request) {
	s.metrics.start()
	writeJSON(w, http.StatusOK, s.metrics.view())
}

// Close stops what the server runs in the background (the metrics
// scraper) and waits for it. The server answers /api/metrics after it,
// with the points it has, and starts nothing new.
func (s *Server) Close() {
	s.metrics.close()
}

// A scrape is what the page needs of one source's metrics at one time.
type scrape struct {
	at       time.Time
	counters map[seriesKey]counterValue
	hists    map[seriesKey]histogram
	pools    map[string]float64 // sandboxes by state
	// hasSlots is set when the source reports worker slots.
	hasSlots     bool
	slotsInUse   float64
	slotsWaiting float64
}

// seriesKey names one series: its metric and its labels.
type seriesKey struct{ metric, labels string }

// counterValue is a counter's value and the label the page groups it by
// (a refusal's code, an invocation's status).
type counterValue struct {
	value float64
	label string
}

// histogram is a histogram's cumulative buckets, by upper bound,
// ascending, the last one +Inf (its count the histogram's).
type histogram []bucket

type bucket struct{ le, count float64 }

// parseMetrics reads Prometheus' text exposition format and keeps what
// the page charts.
func parseMetrics(b []byte) (*scrape, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("parsing metrics: %w", err)
	}
	s := &scrape{counters: map[seriesKey]counterValue{}, hists: map[seriesKey]histogram{}, pools: map[string]float64{}}
	for name, f := range fams {
		for _, mt := range f.GetMetric() {
			labels := labelMap(mt)
			key := seriesKey{metric: name, labels: labelString(labels)}
			switch name {
			case mWorkerInvocations:
				s.counters[key] = counterValue{value: sampleValue(mt), label: labels["status"]}
			case mHTTPRequests:
				s.counters[key] = counterValue{value: sampleValue(mt)}
			case mRefusals:
				s.counters[key] = counterValue{value: sampleValue(mt), label: labels["code"]}
			case mHTTPSeconds:
				if strings.HasSuffix(labels["route"], "/invoke") {
					if h := histogramOf(mt); h != nil {
						s.hists[key] = h
					}
				}
			case mWorkerSeconds:
				if h := histogramOf(mt); h != nil {
					s.hists[key] = h
				}
			case mPoolSandboxes:
				s.pools[labels["state"]] += sampleValue(mt)
			case mWorkerSlotsInUse:
				s.hasSlots = true
				s.slotsInUse += sampleValue(mt)
			case mWorkerSlotsWaiting:
				s.hasSlots = true
				s.slotsWaiting += sampleValue(mt)
			}
		}
	}
	return s, nil
}

func labelMap(mt *dto.Metric) map[string]string {
	m := make(map[string]string, len(mt.GetLabel()))
	for _, l := range mt.GetLabel() {
		m[l.GetName()] = l.GetValue()
	}
	return m
}

// labelString is a series' labels in a canonical order.
func labelString(m map[string]string) string {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(m)) {
		fmt.Fprintf(&b, "%s=%q,", k, m[k])
	}
	return b.String()
}

// sampleValue is a counter's, a gauge's or an untyped sample's value.
func sampleValue(mt *dto.Metric) float64 {
	switch {
	case mt.Counter != nil:
		return mt.GetCounter().GetValue()
	case mt.Gauge != nil:
		return mt.GetGauge().GetValue()
	case mt.Untyped != nil:
		return mt.GetUntyped().GetValue()
	}
	return 0
}

// histogramOf returns a classic histogram's buckets, ending with +Inf.
func histogramOf(mt *dto.Metric) histogram {
	h := mt.GetHistogram()
	if h == nil {
		return nil
	}
	count := h.GetSampleCountFloat()
	if count == 0 {
		count = float64(h.GetSampleCount())
	}
	var out histogram
	for _, b := range h.GetBucket() {
		if math.IsInf(b.GetUpperBound(), +1) {
			continue
		}
		c := b.GetCumulativeCountFloat()
		if c == 0 {
			c = float64(b.GetCumulativeCount())
		}
		out = append(out, bucket{le: b.GetUpperBound(), count: c})
	}
	slices.SortFunc(out, func(x, y bucket) int { return cmpFloat(x.le, y.le) })
	return append(out, bucket{le: math.Inf(+1), count: count})
}

func cmpFloat(x, y float64) int {
	switch {
	case x < y:
		return -1
	case x > y:
		return 1
	}
	return 0
}

// counterDelta is how much a counter grew since prev: its value if it
// went down (the process restarted and counts from zero) or is new (a
// series appears on its first increment).
func counterDelta(cur float64, prev map[seriesKey]counterValue, k seriesKey) float64 {
	p, ok := prev[k]
	if !ok || cur < p.value {
		return cur
	}
	return cur - p.value
}

// histDelta sums histograms' increases, bucket by bucket (by upper bound).
type histDelta map[float64]float64

// add adds cur's increase since prev: all of cur if prev is missing or
// cur went down anywhere (a reset).
func (d *histDelta) add(cur, prev histogram) {
	if *d == nil {
		*d = histDelta{}
	}
	reset := len(prev) != len(cur)
	for i := range cur {
		if !reset && (prev[i].le != cur[i].le || cur[i].count < prev[i].count) {
			reset = true
		}
	}
	for i, b := range cur {
		c := b.count
		if !reset {
			c -= prev[i].count
		}
		(*d)[b.le] += c
	}
}

// quantile is the q-quantile of the summed increases, or nil when nothing
// was observed.
func (d histDelta) quantile(q float64) *float64 {
	h := make(histogram, 0, len(d))
	for le, c := range d {
		h = append(h, bucket{le: le, count: c})
	}
	slices.SortFunc(h, func(x, y bucket) int { return cmpFloat(x.le, y.le) })
	v, ok := quantile(q, h)
	if !ok {
		return nil
	}
	return &v
}

// quantile estimates the q-quantile (0 ≤ q ≤ 1) of the observations in
// the cumulative buckets h (ascending upper bounds, the last +Inf) as
// Prometheus' histogram_quantile does: it finds the bucket the rank q×n
// falls in and interpolates linearly within it, taking 0 as the lower
// bound of the first bucket (unless its upper bound is not positive); a
// rank in the +Inf bucket is the highest finite upper bound. ok is false
// when there is no observation, no +Inf bucket or fewer than two buckets.
func quantile(q float64, h histogram) (float64, bool) {
	if len(h) < 2 || !math.IsInf(h[len(h)-1].le, +1) || q < 0 || q > 1 || math.IsNaN(q) {
		return 0, false
	}
	// Counts must not go down from one bucket to the next: an increase
	// computed from two scrapes taken while observations came in can.
	b := slices.Clone(h)
	for i := 1; i < len(b); i++ {
		b[i].count = max(b[i].count, b[i-1].count)
	}
	n := b[len(b)-1].count
	if n <= 0 {
		return 0, false
	}
	rank := q * n
	i, _ := slices.BinarySearchFunc(b, rank, func(x bucket, r float64) int { return cmpFloat(x.count, r) })
	// BinarySearchFunc finds the first bucket whose count is ≥ rank.
	if i >= len(b)-1 {
		return b[len(b)-2].le, true
	}
	if i == 0 && b[0].le <= 0 {
		return b[0].le, true
	}
	start, end, count := 0.0, b[i].le, b[i].count
	if i > 0 {
		start = b[i-1].le
		count -= b[i-1].count
		rank -= b[i-1].count
	}
	if count <= 0 {
		return end, true
	}
	return start + (end-start)*(rank/count), true
}
