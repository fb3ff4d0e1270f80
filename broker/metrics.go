package broker

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// listenerStats counts what the listener did; the gauges (connections
// open) are read live when metrics are collected.
type listenerStats struct {
	idleClosed   atomic.Int64 // connections closed by IdleTimeout
	readTimeouts atomic.Int64 // connections closed by RequestReadTimeout
}

var (
	connectionsDesc = prometheus.NewDesc("mecha_broker_connections",
		"Kafka client connections the broker is serving.", nil, nil)
	maxConnectionsDesc = prometheus.NewDesc("mecha_broker_max_connections",
		"The connection cap; a connection accepted past it is closed at once.", nil, nil)
	refusedDesc = prometheus.NewDesc("mecha_broker_connections_refused_total",
		"Connections closed as soon as accepted because the broker was at its connection cap.", nil, nil)
	acceptErrorsDesc = prometheus.NewDesc("mecha_broker_accept_errors_total",
		"Failed accepts (for example a full descriptor table), each retried after a wait.", nil, nil)
	segmentFilesDesc = prometheus.NewDesc("mecha_broker_open_segment_files",
		"Partition segment files open now; at most the bound when no more are in use at once.", nil, nil)
	maxSegmentFilesDesc = prometheus.NewDesc("mecha_broker_max_open_segment_files",
		"The bound on open segment files; the others are closed and reopened on demand.", nil, nil)
	timeoutsDesc = prometheus.NewDesc("mecha_broker_connection_timeouts_total",
		"Connections closed by a timeout: idle (nothing sent or taken for the idle timeout) or request_read (a request not finished in time).",
		[]string{"reason"}, nil)
	throttledDesc = prometheus.NewDesc("mecha_broker_fetch_throttled_total",
		"Partition fetches lag throttling answered without records: far behind the high watermark while the log disk was busy.", nil, nil)
	diskBusyDesc = prometheus.NewDesc("mecha_broker_disk_utilization",
		"The log disk's utilization over the last second (0 to 1), what lag throttling compares with its threshold.", nil, nil)
	partitionReadsDesc = prometheus.NewDesc("mecha_broker_partition_reads_total",
		"Partition reads (fetches, replica fetches) by where they were served from: tail_cache (memory) or files.", []string{"source"}, nil)
	replicaServedDesc = prometheus.NewDesc("mecha_broker_replica_bytes_served_total",
		"Record bytes this broker read from its logs for its followers' replica fetches (a reassignment's copy shows here).", nil, nil)
)

// Collector returns the broker's Prometheus metrics, for the process that
// embeds the broker to register on its registry: the connections served
// and the cap, connections refused at the cap, failed accepts,
// connections closed by timeouts, and the open segment files and their
// bound. The broker registers nothing itself,
// so that it stays usable as a library next to any registry.
func (b *Broker) Collector() prometheus.Collector { return brokerCollector{b} }

type brokerCollector struct{ b *Broker }

func (c brokerCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{connectionsDesc, maxConnectionsDesc, refusedDesc, acceptErrorsDesc, timeoutsDesc, segmentFilesDesc, maxSegmentFilesDesc, throttledDesc, diskBusyDesc, replicaServedDesc, partitionReadsDesc} {
		ch <- d
	}
}

func (c brokerCollector) Collect(ch chan<- prometheus.Metric) {
	b := c.b
	ch <- prometheus.MustNewConstMetric(connectionsDesc, prometheus.GaugeValue, float64(b.connCount()))
	ch <- prometheus.MustNewConstMetric(maxConnectionsDesc, prometheus.GaugeValue, float64(b.cfg.MaxConnections))
	ch <- prometheus.MustNewConstMetric(refusedDesc, prometheus.CounterValue, float64(b.ln.Refused()))
	ch <- prometheus.MustNewConstMetric(acceptErrorsDesc, prometheus.CounterValue, float64(b.ln.AcceptErrors()))
	ch <- prometheus.MustNewConstMetric(timeoutsDesc, prometheus.CounterValue, float64(b.stats.idleClosed.Load()), "idle")
	ch <- prometheus.MustNewConstMetric(timeoutsDesc, prometheus.CounterValue, float64(b.stats.readTimeouts.Load()), "request_read")
	ch <- prometheus.MustNewConstMetric(segmentFilesDesc, prometheus.GaugeValue, float64(b.topics.files.Open()))
	ch <- prometheus.MustNewConstMetric(maxSegmentFilesDesc, prometheus.GaugeValue, float64(b.topics.files.Max()))
	ch <- prometheus.MustNewConstMetric(throttledDesc, prometheus.CounterValue, float64(b.throttled.Load()))
	ch <- prometheus.MustNewConstMetric(diskBusyDesc, prometheus.GaugeValue, b.disk.utilization())
	ch <- prometheus.MustNewConstMetric(replicaServedDesc, prometheus.CounterValue, float64(b.replicaServed.Load()))
	tail, files := b.topics.files.Reads()
	ch <- prometheus.MustNewConstMetric(partitionReadsDesc, prometheus.CounterValue, float64(tail), "tail_cache")
	ch <- prometheus.MustNewConstMetric(partitionReadsDesc, prometheus.CounterValue, float64(files), "files")
}
