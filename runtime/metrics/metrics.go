// Package metrics holds mecha's Prometheus metrics. Handles for each
// (protocol, block, operation) are resolved once and cached, so that the
// request path pays two atomic adds and no label hashing.
package metrics

import (
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics is the runtime's metric set, registered on its own registry.
type Metrics struct {
	Registry *prometheus.Registry

	apiTotal    *prometheus.CounterVec
	apiLatency  *prometheus.HistogramVec
	delTotal    *prometheus.CounterVec
	delLatency  *prometheus.HistogramVec
	appHealthy  prometheus.Gauge
	compsLoaded *prometheus.GaugeVec

	ops sync.Map // opKey -> *Op
}

var latencyBuckets = []float64{
	0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
}

// New builds and registers the metrics, plus Go runtime and process
// collectors.
func New() *Metrics {
	m := &Metrics{Registry: prometheus.NewRegistry()}
	m.apiTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mecha_api_requests_total",
		Help: "API calls from apps, by protocol, building block, operation and status (HTTP status or gRPC code).",
	}, []string{"protocol", "block", "op", "status"})
	m.apiLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "mecha_api_request_duration_seconds",
		Help:    "Latency of API calls from apps, by protocol, building block and operation.",
		Buckets: latencyBuckets,
	}, []string{"protocol", "block", "op"})
	m.delTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mecha_app_deliveries_total",
		Help: "Deliveries to the app (pub/sub events, input binding events), by kind, component, and outcome.",
	}, []string{"kind", "component", "status"})
	m.delLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "mecha_app_delivery_duration_seconds",
		Help:    "Latency of deliveries to the app, by kind and component.",
		Buckets: latencyBuckets,
	}, []string{"kind", "component"})
	m.appHealthy = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "mecha_app_healthy",
		Help: "1 when the app's last health probe passed.",
	})
	m.compsLoaded = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "mecha_components_loaded",
		Help: "Loaded components by building block.",
	}, []string{"block"})
	m.Registry.MustRegister(m.apiTotal, m.apiLatency, m.delTotal, m.delLatency, m.appHealthy, m.compsLoaded,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves /metrics.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{})
}

type opKey struct{ protocol, block, op string }

// Op is a cached handle for one API operation.
type Op struct {
	m       *Metrics
	key     opKey
	latency prometheus.Observer
	// byStatus caches the counter per status; statuses are few.
	byStatus sync.Map // string -> prometheus.Counter
}

// API returns the handle for (protocol, block, op). Call it once per route
// and keep the handle.
func (m *Metrics) API(protocol, block, op string) *Op {
	k := opKey{protocol, block, op}
	if v, ok := m.ops.Load(k); ok {
		return v.(*Op)
	}
	o := &Op{m: m, key: k, latency: m.apiLatency.WithLabelValues(protocol, block, op)}
	v, _ := m.ops.LoadOrStore(k, o)
	return v.(*Op)
}

// Observe records one call that ended with status after d.
func (o *Op) Observe(status string, d time.Duration) {
	o.latency.Observe(d.Seconds())
	c, ok := o.byStatus.Load(status)
	if !ok {
		c, _ = o.byStatus.LoadOrStore(status, o.m.apiTotal.WithLabelValues(o.key.protocol, o.key.block, o.key.op, status))
	}
	c.(prometheus.Counter).Inc()
}

var httpStatus [600]string

func init() {
	for i := range httpStatus {
		httpStatus[i] = strconv.Itoa(i)
	}
}

// ObserveHTTP records a call that ended with an HTTP status code.
func (o *Op) ObserveHTTP(code int, d time.Duration) {
	s := "other"
	if code >= 0 && code < len(httpStatus) {
		s = httpStatus[code]
	}
	o.Observe(s, d)
}

// Delivery records one delivery to the app.
func (m *Metrics) Delivery(kind, component, status string, d time.Duration) {
	m.delTotal.WithLabelValues(kind, component, status).Inc()
	m.delLatency.WithLabelValues(kind, component).Observe(d.Seconds())
}

// SetAppHealthy records the app's health.
func (m *Metrics) SetAppHealthy(ok bool) {
	if ok {
		m.appHealthy.Set(1)
	} else {
		m.appHealthy.Set(0)
	}
}

// SetComponents records how many components of a block are loaded.
func (m *Metrics) SetComponents(block string, n int) {
	m.compsLoaded.WithLabelValues(block).Set(float64(n))
}

// ListenerStats is what a listener reports (netlimit.Listener).
type ListenerStats interface {
	Name() string
	Open() int64
	Refused() int64
	AcceptErrors() int64
}

// AddListener exports a listener's connections: open now, refused at
// its cap, and failed accepts (mecha_listener_*{listener="…"}).
func (m *Metrics) AddListener(l ListenerStats) {
	labels := prometheus.Labels{"listener": l.Name()}
	m.Registry.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "mecha_listener_connections", Help: "Connections open on the listener.", ConstLabels: labels},
			func() float64 { return float64(l.Open()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "mecha_listener_refused_total", Help: "Connections closed at once because the listener was at its connection cap.", ConstLabels: labels},
			func() float64 { return float64(l.Refused()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "mecha_listener_accept_errors_total", Help: "Failed accepts (out of descriptors, …), retried.", ConstLabels: labels},
			func() float64 { return float64(l.AcceptErrors()) }),
	)
}

// CruxStats is what the Crux wiring reports: its routing decisions and
// the cluster map it routes by.
type CruxStats struct {
	// Local and Remote count the slots operations were sent to: in
	// process (this runtime's engine) or to another member; an operation
	// on several slots (a scan without a hash tag, a bulk call) counts
	// each slot, and a retry after "moved" counts again. Moved counts
	// "moved" answers, Unavailable the slots refused at once (no leader,
	// or no map yet).
	Local, Remote, Moved, Unavailable int64
	// MapVersion is the map's version; LeaderChanges counts the slots
	// whose leader changed from one map to the next.
	MapVersion, LeaderChanges int64
	// SlotsLed is the number of slots this runtime leads; Leaderless and
	// Moving the slots without a leader and with a move in progress.
	SlotsLed, Leaderless, Moving int
	// Lags are the replication lag of the slots this runtime leads (per
	// slot: the most records an in-sync follower lacks, and for how
	// long); Copies and Fetched count the slot copies this runtime
	// installed as a follower and the records it fetched.
	Lags            []CruxSlotLag
	Copies, Fetched int64
}

// CruxSlotLag is one slot's replication lag.
type CruxSlotLag struct {
	Slot    int
	Records int64
	Seconds float64
}

// cruxCollector exports CruxStats, read once per scrape so that one
// scrape's figures come from one map.
type cruxCollector struct {
	read                                         func() CruxStats
	routed, moved, unavailable, changes, version *prometheus.Desc
	led, leaderless, moving                      *prometheus.Desc
	lagRecords, lagSeconds, copies, fetched      *prometheus.Desc
}

// AddCrux exports read's figures (mecha_crux_*); read is called once at
// each scrape.
func (m *Metrics) AddCrux(read func() CruxStats) {
	m.Registry.MustRegister(&cruxCollector{
		read:        read,
		routed:      prometheus.NewDesc("mecha_crux_routed_total", "Crux slot routings by where the slot was served: local (this runtime's engine, in process) or remote (another member). An operation on several slots counts each; a retry after \"moved\" counts again.", []string{"where"}, nil),
		moved:       prometheus.NewDesc("mecha_crux_moved_total", "Crux \"moved\" answers: this runtime's map was behind, it refreshed and retried.", nil, nil),
		unavailable: prometheus.NewDesc("mecha_crux_unavailable_total", "Crux slot routings refused at once (503): the slot had no leader, or there was no cluster map yet.", nil, nil),
		changes:     prometheus.NewDesc("mecha_crux_leader_changes_total", "Crux slots whose leader changed, over the maps this runtime applied.", nil, nil),
		version:     prometheus.NewDesc("mecha_crux_map_version", "The version of the Crux cluster map this runtime routes by.", nil, nil),
		led:         prometheus.NewDesc("mecha_crux_slots_led", "Crux slots this runtime leads.", nil, nil),
		leaderless:  prometheus.NewDesc("mecha_crux_slots_leaderless", "Crux slots with no leader in the map: their keys answer 503.", nil, nil),
		moving:      prometheus.NewDesc("mecha_crux_slots_moving", "Crux slots with a move in progress.", nil, nil),
		lagRecords:  prometheus.NewDesc("mecha_crux_replica_lag_records", "Per Crux slot this runtime leads: the most records an in-sync follower lacks.", []string{"slot"}, nil),
		lagSeconds:  prometheus.NewDesc("mecha_crux_replica_lag_seconds", "Per Crux slot this runtime leads: how long its most lagging in-sync follower has lacked records (0 when caught up).", []string{"slot"}, nil),
		copies:      prometheus.NewDesc("mecha_crux_replica_copies_total", "Crux slot copies this runtime installed as a follower (a new, restarted or diverged replica).", nil, nil),
		fetched:     prometheus.NewDesc("mecha_crux_replica_fetched_records_total", "Crux records this runtime fetched from slot leaders as a follower.", nil, nil),
	})
}

// Describe implements prometheus.Collector.
func (c *cruxCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.routed, c.moved, c.unavailable, c.changes, c.version, c.led, c.leaderless, c.moving, c.lagRecords, c.lagSeconds, c.copies, c.fetched} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *cruxCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.read()
	counter := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v int64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v))
	}
	counter(c.routed, s.Local, "local")
	counter(c.routed, s.Remote, "remote")
	counter(c.moved, s.Moved)
	counter(c.unavailable, s.Unavailable)
	counter(c.changes, s.LeaderChanges)
	gauge(c.version, s.MapVersion)
	gauge(c.led, int64(s.SlotsLed))
	gauge(c.leaderless, int64(s.Leaderless))
	gauge(c.moving, int64(s.Moving))
	counter(c.copies, s.Copies)
	counter(c.fetched, s.Fetched)
	for _, l := range s.Lags {
		slot := strconv.Itoa(l.Slot)
		ch <- prometheus.MustNewConstMetric(c.lagRecords, prometheus.GaugeValue, float64(l.Records), slot)
		ch <- prometheus.MustNewConstMetric(c.lagSeconds, prometheus.GaugeValue, l.Seconds, slot)
	}
}
