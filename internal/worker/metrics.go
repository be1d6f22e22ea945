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

var (
	slotsInUse = prometheus.NewDesc("cloister_worker_slots_in_use", "Invocation slots held by running calls.", nil, nil)
	slotsWait  = prometheus.NewDesc("cloister_worker_slots_waiting", "Calls waiting for a slot, all namespaces.", nil, nil)
	slotsMem   = prometheus.NewDesc("cloister_worker_memory_reserved_bytes", "Guest memory reserved by running calls, against --memory-budget.", nil, nil)
	slotsTotal = prometheus.NewDesc("cloister_worker_slot_events_total", "Slot decisions: granted, queued, and refused (queue_full, wait, memory).", []string{"event"}, nil)
)

// slotCollector reports the fair slots (slots.go).
type slotCollector struct{ s *slots }

func (c slotCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- slotsInUse
	ch <- slotsWait
	ch <- slotsMem
	ch <- slotsTotal
}

func (c slotCollector) Collect(ch chan<- prometheus.Metric) {
	u := c.s.use()
	ch <- prometheus.MustNewConstMetric(slotsInUse, prometheus.GaugeValue, float64(u.Used))
	ch <- prometheus.MustNewConstMetric(slotsWait, prometheus.GaugeValue, float64(u.Waiting))
	ch <- prometheus.MustNewConstMetric(slotsMem, prometheus.GaugeValue, float64(u.MemoryReserved))
	for ev, n := range map[string]uint64{"granted": u.Granted, "queued": u.Queued, "refused_queue_full": u.RefusedQueueFull,
		"refused_wait": u.RefusedWait, "refused_memory": u.RefusedMemory} {
		ch <- prometheus.MustNewConstMetric(slotsTotal, prometheus.CounterValue, float64(n), ev)
	}
}
