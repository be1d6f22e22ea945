package console

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/cloister-faas/cloister/client"
)

// platformMetrics is a registry holding the metrics the page charts, as
// the gateway and a worker declare them.
type platformMetrics struct {
	reg         *prometheus.Registry
	requests    *prometheus.CounterVec
	latency     *prometheus.HistogramVec
	refusals    *prometheus.CounterVec
	invocations *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	pool        *prometheus.GaugeVec
	slots       prometheus.Gauge
}

func newPlatformMetrics() *platformMetrics {
	buckets := prometheus.ExponentialBuckets(0.0001, 2, 18)
	m := &platformMetrics{
		reg:         prometheus.NewRegistry(),
		requests:    prometheus.NewCounterVec(prometheus.CounterOpts{Name: mHTTPRequests}, []string{"route", "code"}),
		latency:     prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: mHTTPSeconds, Buckets: buckets}, []string{"route"}),
		refusals:    prometheus.NewCounterVec(prometheus.CounterOpts{Name: mRefusals}, []string{"code"}),
		invocations: prometheus.NewCounterVec(prometheus.CounterOpts{Name: mWorkerInvocations}, []string{"mode", "status"}),
		duration:    prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: mWorkerSeconds, Buckets: buckets}, []string{"mode"}),
		pool:        prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: mPoolSandboxes}, []string{"namespace", "function", "version", "state"}),
		slots:       prometheus.NewGauge(prometheus.GaugeOpts{Name: mWorkerSlotsInUse}),
	}
	m.reg.MustRegister(m.requests, m.latency, m.refusals, m.invocations, m.duration, m.pool, m.slots)
	return m
}

// text is the registry's exposition, as promhttp serves it.
func (m *platformMetrics) text(t *testing.T) []byte {
	t.Helper()
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("exposition: HTTP %d", rec.Code)
	}
	return rec.Body.Bytes()
}

const invokeRoute = "POST /v1/functions/{name}/invoke"

func TestParseMetrics(t *testing.T) {
	m := newPlatformMetrics()
	m.requests.WithLabelValues(invokeRoute, "200").Add(7)
	m.requests.WithLabelValues("GET /metrics", "200").Add(2)
	m.latency.WithLabelValues(invokeRoute).Observe(0.003)
	m.latency.WithLabelValues("GET /metrics").Observe(1) // not an invoke route: left out
	m.refusals.WithLabelValues("not_found").Add(3)
	m.invocations.WithLabelValues("hpke", "ok").Add(5)
	m.invocations.WithLabelValues("plain", "trap").Inc()
	m.duration.WithLabelValues("hpke").Observe(0.002)
	m.pool.WithLabelValues("acme", "a", "1", "idle").Set(2)
	m.pool.WithLabelValues("acme", "b", "1", "idle").Set(3)
	m.pool.WithLabelValues("acme", "a", "1", "busy").Set(1)
	m.slots.Set(4)
	text := m.text(t)
	if !strings.Contains(string(text), "# TYPE cloister_worker_invocation_seconds histogram") {
		t.Fatalf("not the exposition format expected:\n%s", text)
	}
	s, err := parseMetrics(text)
	if err != nil {
		t.Fatal(err)
	}
	sums := map[string]float64{}
	for k, v := range s.counters {
		sums[k.metric+" "+v.label] += v.value
	}
	for k, want := range map[string]float64{mHTTPRequests + " ": 9, mRefusals + " not_found": 3, mWorkerInvocations + " ok": 5, mWorkerInvocations + " trap": 1} {
		if sums[k] != want {
			t.Errorf("%s: got %v, want %v", k, sums[k], want)
		}
	}
	if len(s.hists) != 2 {
		t.Fatalf("histograms: got %d, want 2 (the invoke route's and the worker's): %v", len(s.hists), s.hists)
	}
	for k, h := range s.hists {
		if len(h) != 19 || !math.IsInf(h[18].le, +1) || h[18].count != 1 || h[0].le != 0.0001 {
			t.Errorf("%v: got %d buckets, last %v; want 18 and +Inf holding 1", k, len(h), h[len(h)-1])
		}
	}
	if s.pools["idle"] != 5 || s.pools["busy"] != 1 || !s.hasSlots || s.slotsInUse != 4 {
		t.Errorf("gauges: pools %v, slots %v (%v); want idle 5, busy 1, slots 4", s.pools, s.slotsInUse, s.hasSlots)
	}
}

func TestParseMetricsRefusesGarbage(t *testing.T) {
	for _, text := range []string{"cloister_refusals_total{code=\"x\" 1\n", "# TYPE x counter\nx abc\n", "x{a=\"1\"} 1 2 3\n"} {
		if _, err := parseMetrics([]byte(text)); err == nil {
			t.Errorf("parseMetrics(%q): no error", text)
		}
	}
}

func TestQuantile(t *testing.T) {
	inf := math.Inf(+1)
	h := func(b ...float64) histogram {
		var out histogram
		for i := 0; i < len(b); i += 2 {
			out = append(out, bucket{le: b[i], count: b[i+1]})
		}
		return out
	}
	for _, tc := range []struct {
		name string
		q    float64
		h    histogram
		want float64
		ok   bool
	}{
		{"first bucket, from 0", 0.25, h(0.1, 10, 0.2, 20, 0.4, 40, inf, 40), 0.1, true},
		{"at a bucket's top", 0.5, h(0.1, 10, 0.2, 20, 0.4, 40, inf, 40), 0.2, true},
		{"inside a bucket", 0.75, h(0.1, 10, 0.2, 20, 0.4, 40, inf, 40), 0.3, true},
		{"inside the first bucket", 0.1, h(1, 10, 2, 20, inf, 20), 0.2, true},
		{"in +Inf: the highest finite bound", 0.99, h(0.1, 5, 1, 9, inf, 10), 1, true},
		{"empty buckets skipped", 0.5, h(0.1, 0, 0.2, 0, 0.4, 4, inf, 4), 0.3, true},
		{"first bound not positive", 0.1, h(0, 5, 1, 10, inf, 10), 0, true},
		{"counts repaired to rise", 0.5, h(0.1, 5, 0.2, 4, inf, 10), 0.1, true},
		{"no observations", 0.5, h(0.1, 0, inf, 0), 0, false},
		{"no +Inf bucket", 0.5, h(0.1, 1, 0.2, 2), 0, false},
		{"one bucket", 0.5, h(inf, 3), 0, false},
		{"q out of range", 1.5, h(0.1, 1, inf, 1), 0, false},
	} {
		got, ok := quantile(tc.q, tc.h)
		if ok != tc.ok || math.Abs(got-tc.want) > 1e-12 {
			t.Errorf("%s: quantile(%v) = %v, %v; want %v, %v", tc.name, tc.q, got, ok, tc.want, tc.ok)
		}
	}
}

// fakeSource serves canned expositions (or errors), one per scrape.
type fakeSource struct {
	mu    sync.Mutex
	texts []string
	errs  []error
	n     int
}

func (f *fakeSource) fetch(context.Context) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	i := min(f.n, len(f.texts)-1)
	f.n++
	if f.errs != nil && f.errs[i] != nil {
		return nil, f.errs[i]
	}
	return []byte(f.texts[i]), nil
}

// testScraper is a scraper over fake sources with a clock that advances
// five seconds per scrape.
func testScraper(sources ...*fakeSource) *metricsScraper {
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	var ticks atomic.Int64
	m := &metricsScraper{interval: 5 * time.Second, now: func() time.Time {
		return t0.Add(time.Duration(ticks.Add(1)) * 5 * time.Second)
	}}
	for i, s := range sources {
		m.sources = append(m.sources, metricsSource{url: fmt.Sprintf("fake-%d", i), auth: "none", fetch: s.fetch})
	}
	m.init()
	return m
}

// exposition writes a gateway's and a worker's metrics with these values.
func exposition(invOK, invTrap, refused float64, fastObs, slowObs float64, idle float64) string {
	return fmt.Sprintf(`# TYPE cloister_worker_invocations_total counter
cloister_worker_invocations_total{mode="hpke",status="ok"} %v
cloister_worker_invocations_total{mode="hpke",status="trap"} %v
# TYPE cloister_refusals_total counter
cloister_refusals_total{code="function_trap"} %v
# TYPE cloister_http_requests_total counter
cloister_http_requests_total{route="POST /v1/functions/{name}/invoke",code="200"} %v
# TYPE cloister_http_request_seconds histogram
cloister_http_request_seconds_bucket{route="POST /v1/functions/{name}/invoke",le="0.01"} %v
cloister_http_request_seconds_bucket{route="POST /v1/functions/{name}/invoke",le="0.1"} %v
cloister_http_request_seconds_bucket{route="POST /v1/functions/{name}/invoke",le="+Inf"} %v
cloister_http_request_seconds_sum{route="POST /v1/functions/{name}/invoke"} 1
cloister_http_request_seconds_count{route="POST /v1/functions/{name}/invoke"} %v
# TYPE cloister_pool_sandboxes gauge
cloister_pool_sandboxes{namespace="acme",function="f",version="1",state="idle"} %v
`, invOK, invTrap, refused, invOK+invTrap, fastObs, fastObs+slowObs, fastObs+slowObs, fastObs+slowObs, idle)
}

func TestScraperRatesAndReset(t *testing.T) {
	src := &fakeSource{texts: []string{
		exposition(100, 1, 1, 100, 0, 2), // baseline
		exposition(110, 3, 3, 110, 10, 3),
		exposition(4, 0, 0, 0, 4, 1), // the process restarted
	}}
	m := testScraper(src)
	for range 3 {
		m.scrapeOnce(context.Background())
	}
	v := m.view()
	if len(v.Points) != 3 {
		t.Fatalf("got %d points, want 3", len(v.Points))
	}
	p0, p1, p2 := v.Points[0], v.Points[1], v.Points[2]
	if p0.Invocations != nil || p0.P50 != nil || p0.Errors != nil || p0.Pools["idle"] != 2 {
		t.Errorf("baseline point: got %+v, want no rates and the pool gauge", p0)
	}
	// 12 invocations (10 ok, 2 trap) in 5 s.
	wantF(t, "invocations/s", p1.Invocations, 12.0/5)
	wantF(t, "requests/s", p1.Requests, 12.0/5)
	if p1.Errors["worker trap"] != 2 || p1.Errors["gateway function_trap"] != 2 || len(p1.Errors) != 2 {
		t.Errorf("errors: got %v, want worker trap 2 and gateway function_trap 2", p1.Errors)
	}
	// 20 observations: 10 under 10 ms, 10 in (10 ms, 100 ms].
	wantF(t, "p50", p1.P50, 0.01)
	wantF(t, "p99", p1.P99, 0.01+0.09*(19.8-10)/10)
	if p1.WorkerP50 != nil {
		t.Errorf("worker p50: got %v, want null (no worker histogram)", *p1.WorkerP50)
	}
	// After the reset: the new values are the increase.
	wantF(t, "invocations/s after a reset", p2.Invocations, 4.0/5)
	wantF(t, "p50 after a reset", p2.P50, 0.01+0.09*0.5)
	if len(p2.Errors) != 0 || p2.Pools["idle"] != 1 {
		t.Errorf("after a reset: errors %v (want none), pools %v (want idle 1)", p2.Errors, p2.Pools)
	}
}

func wantF(t *testing.T, what string, got *float64, want float64) {
	t.Helper()
	if got == nil || math.Abs(*got-want) > 1e-9 {
		if got == nil {
			t.Errorf("%s: got null, want %v", what, want)
			return
		}
		t.Errorf("%s: got %v, want %v", what, *got, want)
	}
}

// TestScrapeFailureReported: a source that fails or answers garbage is a
// point with its error, and the next good scrape compares with the last
// good one.
func TestScrapeFailureReported(t *testing.T) {
	good := &fakeSource{texts: []string{exposition(10, 0, 0, 0, 0, 0), exposition(20, 0, 0, 0, 0, 0)}}
	bad := &fakeSource{
		texts: []string{exposition(0, 0, 0, 0, 0, 0), "", "not { metrics", exposition(15, 0, 0, 0, 0, 0)},
		errs:  []error{nil, errors.New("connection refused"), nil, nil},
	}
	m := testScraper(good, bad)
	for range 4 {
		m.scrapeOnce(context.Background())
	}
	v := m.view()
	if len(v.Points) != 4 {
		t.Fatalf("got %d points, want 4", len(v.Points))
	}
	if e := v.Points[1].Error; !strings.Contains(e, "fake-1: connection refused") {
		t.Errorf("point 1: error %q, want fake-1's", e)
	}
	if e := v.Points[2].Error; !strings.Contains(e, "fake-1: parsing metrics") {
		t.Errorf("point 2: error %q, want a parse error", e)
	}
	// Point 1: good went 10 → 20 in 5 s; bad failed.
	wantF(t, "point 1", v.Points[1].Invocations, 2)
	// Point 3: good is 20 → 20; bad is 0 → 15 over the 15 s since its
	// last good scrape.
	wantF(t, "point 3", v.Points[3].Invocations, 1)
	if v.Points[3].Error != "" || v.Sources[1].Error != "" || v.Sources[1].LastScrape.IsZero() {
		t.Errorf("after recovering: point error %q, source %+v", v.Points[3].Error, v.Sources[1])
	}
}

func TestScraperRingBounded(t *testing.T) {
	m := testScraper(&fakeSource{texts: []string{exposition(1, 0, 0, 0, 0, 0)}})
	for range MetricsPoints + 20 {
		m.scrapeOnce(context.Background())
	}
	v := m.view()
	if len(v.Points) != MetricsPoints || v.Capacity != MetricsPoints {
		t.Fatalf("got %d points (capacity %d), want %d", len(v.Points), v.Capacity, MetricsPoints)
	}
	if !v.Points[0].Time.Before(v.Points[len(v.Points)-1].Time) || v.Points[0].Time.Equal(time.Date(2026, 3, 1, 12, 0, 5, 0, time.UTC)) {
		t.Errorf("the oldest points were not dropped: first at %v", v.Points[0].Time)
	}
}

// fakeGateway serves /metrics from a registry to the platform token only,
// and counts the scrapes.
func fakeGateway(t *testing.T, m *platformMetrics, token string, scrapes *atomic.Int64) *httptest.Server {
	t.Helper()
	h := promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
	gw := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/metrics" {
			http.NotFound(w, r)
			return
		}
		scrapes.Add(1)
		if r.Header.Get("Authorization") != "Bearer "+token {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			w.Write([]byte(`{"code":"unauthorized","message":"no platform key"}`))
			return
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(gw.Close)
	return gw
}

func testPolicy() client.Policy {
	return client.Policy{AllowTEE: []string{"sim"}, SimRoots: []string{strings.Repeat("ab", 32)}, Measurements: []string{strings.Repeat("cd", 32)}}
}

// TestMetricsAPI runs the console against a gateway and an extra endpoint
// serving metrics that change: the answer's shape, the key sent to the
// gateway only, and nothing scraped after Close.
func TestMetricsAPI(t *testing.T) {
	const platformKey = "platform-key-0123456789"
	gm, wm := newPlatformMetrics(), newPlatformMetrics()
	var gwScrapes, extraScrapes atomic.Int64
	gw := fakeGateway(t, gm, platformKey, &gwScrapes)
	var extraAuth atomic.Value
	extraAuth.Store("")
	wh := promhttp.HandlerFor(wm.reg, promhttp.HandlerOpts{})
	extra := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		extraScrapes.Add(1)
		if a := r.Header.Get("Authorization"); a != "" {
			extraAuth.Store(a)
		}
		wh.ServeHTTP(w, r)
	}))
	t.Cleanup(extra.Close)

	c, err := client.New(gw.URL, platformKey, testPolicy())
	if err != nil {
		t.Fatal(err)
	}
	token, err := NewToken()
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{Client: c, Token: token, MetricsURLs: []string{extra.URL + "/metrics"}, ScrapeInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	get := func() (MetricsView, map[string]any) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/api/metrics", nil)
		req.Header.Set(TokenHeader, token)
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /api/metrics: HTTP %d", resp.StatusCode)
		}
		var raw json.RawMessage
		if err := json.NewDecoder(resp.Body).Decode(&raw); err != nil {
			t.Fatal(err)
		}
		var v MetricsView
		var m map[string]any
		if err := json.Unmarshal(raw, &v); err != nil {
			t.Fatal(err)
		}
		json.Unmarshal(raw, &m)
		return v, m
	}
	if gwScrapes.Load() != 0 {
		t.Fatalf("scraped before the first request")
	}
	v, raw := get()
	for _, k := range []string{"interval_seconds", "capacity", "sources", "points", "note"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("the answer has no %q: %v", k, raw)
		}
	}
	if v.IntervalSeconds != 0.02 || len(v.Sources) != 2 || v.Sources[0].URL != gw.URL+"/metrics" || v.Sources[0].Auth != "api key" || v.Sources[1].Auth != "none" {
		t.Fatalf("first answer: %+v", v)
	}

	// Invocations keep coming while the console scrapes.
	stop := make(chan struct{})
	var feeder sync.WaitGroup
	feeder.Add(1)
	go func() {
		defer feeder.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
			gm.requests.WithLabelValues(invokeRoute, "200").Inc()
			gm.latency.WithLabelValues(invokeRoute).Observe(0.004)
			wm.invocations.WithLabelValues("hpke", "ok").Inc()
			wm.duration.WithLabelValues("hpke").Observe(0.003)
			wm.pool.WithLabelValues("acme", "f", "1", "idle").Set(2)
		}
	}()
	var last MetricsPoint
	deadline := time.Now().Add(10 * time.Second)
	for {
		v, raw = get()
		if n := len(v.Points); n > 0 {
			last = v.Points[n-1]
		}
		if last.Invocations != nil && *last.Invocations > 0 && last.P50 != nil && last.WorkerP99 != nil && last.Pools["idle"] == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no point with invocations, latency and pools in 10 s: last %+v, sources %+v", last, v.Sources)
		}
		time.Sleep(20 * time.Millisecond)
	}
	close(stop)
	feeder.Wait()
	if last.Error != "" || *last.Requests <= 0 {
		t.Errorf("last point %+v: want no error and requests", last)
	}
	if *last.P50 < 0.0001 || *last.P50 > 0.0064 || *last.WorkerP99 > 0.0064 {
		t.Errorf("latency p50 %v, worker p99 %v: want within the 4 ms and 3 ms observations' buckets", *last.P50, *last.WorkerP99)
	}
	points := raw["points"].([]any)
	p := points[len(points)-1].(map[string]any)
	for _, k := range []string{"t", "invocations_per_s", "requests_per_s", "p50_s", "p99_s", "worker_p50_s", "worker_p99_s", "errors", "pools", "slots_in_use"} {
		if _, ok := p[k]; !ok {
			t.Errorf("a point has no %q: %v", k, p)
		}
	}
	if a := extraAuth.Load().(string); a != "" {
		t.Errorf("the extra endpoint was sent Authorization %q: the API key goes to the gateways only", a)
	}

	s.Close()
	// A scrape that Close cut short may still reach a server's handler
	// just after: let those land, then count. No scrape may start later.
	time.Sleep(100 * time.Millisecond)
	n1, n2 := gwScrapes.Load(), extraScrapes.Load()
	time.Sleep(100 * time.Millisecond)
	if gwScrapes.Load() != n1 || extraScrapes.Load() != n2 {
		t.Errorf("scraped after Close: gateway %d → %d, extra %d → %d", n1, gwScrapes.Load(), n2, extraScrapes.Load())
	}
	get() // answers after Close, and starts nothing
	time.Sleep(60 * time.Millisecond)
	if gwScrapes.Load() != n1 {
		t.Errorf("a request after Close started the scraper again")
	}
}

// TestMetricsRefusedKey: a key the gateway refuses is each point's error,
// not a failure of the API.
func TestMetricsRefusedKey(t *testing.T) {
	var scrapes atomic.Int64
	gw := fakeGateway(t, newPlatformMetrics(), "the-platform-key", &scrapes)
	c, err := client.New(gw.URL, "a-namespace-key", testPolicy())
	if err != nil {
		t.Fatal(err)
	}
	m := newMetricsScraper(Config{Client: c, ScrapeInterval: time.Second})
	m.scrapeOnce(context.Background())
	v := m.view()
	if len(v.Points) != 1 || !strings.Contains(v.Points[0].Error, "no platform key") || !strings.Contains(v.Sources[0].Error, "no platform key") {
		t.Fatalf("got %+v, want the refusal as the point's and the source's error", v)
	}
}

// TestMetricsRealGateway scrapes the shared node's gateway, with its
// platform key, through the client.
func TestMetricsRealGateway(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a node")
	}
	n := sharedNode(t)
	pol, err := client.LoadPolicy(n.PolicyPath)
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(n.URL, n.Token, pol)
	if err != nil {
		t.Fatal(err)
	}
	m := newMetricsScraper(Config{Client: c, ScrapeInterval: time.Second})
	for range 2 {
		m.scrapeOnce(context.Background())
	}
	v := m.view()
	p := v.Points[len(v.Points)-1]
	// The first scrape itself is an HTTP request the second one counts.
	if p.Error != "" || p.Requests == nil || *p.Requests <= 0 || p.Pools == nil || p.SlotsInUse == nil {
		t.Fatalf("got %+v (sources %+v), want requests, pools and slots from the node", p, v.Sources)
	}
}
