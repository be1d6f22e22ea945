package worker

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

var (
	poolSandboxes = prometheus.NewDesc("cloister_pool_sandboxes", "Sandboxes of a reactor function, by state.",
		[]string{"namespace", "function", "version", "state"}, nil)
	poolEvents = prometheus.NewDesc("cloister_pool_events_total", "Pool events of a reactor function: hit, miss, reset, discard.",
		[]string{"namespace", "function", "version", "event"}, nil)
	poolResetPages = prometheus.NewDesc("cloister_pool_reset_pages_total", "Host pages restored from the snapshot by resets.",
		[]string{"namespace", "function", "version"}, nil)
)

// poolCollector reports the pools of the loaded reactor functions.
type poolCollector struct{ w *Worker }

func (c poolCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- poolSandboxes
	ch <- poolEvents
	ch <- poolResetPages
}

func (c poolCollector) Collect(ch chan<- prometheus.Metric) {
	c.w.fns.Range(func(_, v any) bool {
		l := v.(*loaded)
		if l.reactor == nil {
			return true
		}
		s := l.reactor.Stats()
		lv := []string{l.fn.Namespace, l.fn.Name, strconv.Itoa(l.fn.Version)}
		with := func(x string) []string { return append(append([]string(nil), lv...), x) }
		ch <- prometheus.MustNewConstMetric(poolSandboxes, prometheus.GaugeValue, float64(s.Idle), with("idle")...)
		ch <- prometheus.MustNewConstMetric(poolSandboxes, prometheus.GaugeValue, float64(s.Live-s.Idle), with("busy")...)
		ch <- prometheus.MustNewConstMetric(poolEvents, prometheus.CounterValue, float64(s.Hits), with("hit")...)
		ch <- prometheus.MustNewConstMetric(poolEvents, prometheus.CounterValue, float64(s.Misses), with("miss")...)
		ch <- prometheus.MustNewConstMetric(poolEvents, prometheus.CounterValue, float64(s.Resets), with("reset")...)
		ch <- prometheus.MustNewConstMetric(poolEvents, prometheus.CounterValue, float64(s.Discards), with("discard")...)
		ch <- prometheus.MustNewConstMetric(poolResetPages, prometheus.CounterValue, float64(s.ResetPages), lv...)
		return true
	})
}
