package loop

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"nbchat/protocol"
	"nbchat/room"
)

// metrics are the server's Prometheus series. Hot-path counts are plain
// atomics read at scrape time, so counting costs one atomic add.
type metrics struct {
	reg *prometheus.Registry

	messagesIn   atomic.Uint64
	bytesOut     atomic.Uint64
	fastUpgrades atomic.Uint64

	errors      *prometheus.CounterVec
	closes      *prometheus.CounterVec
	handshakes  *prometheus.CounterVec
	rateLimited prometheus.Counter
	acceptFails prometheus.Counter
	// reuseLate counts connections registered although the fd-reuse
	// barrier did not pass in time (reuse.go).
	reuseLate prometheus.Counter
	// nameProbes counts pings sent because another connection asked for
	// the name a connection holds (conn.Probe).
	nameProbes prometheus.Counter
	fanout     prometheus.Histogram

	// errorCounters caches one child per error code, so counting an error
	// does no label lookup; so do upgraded (handshakes_total{status="101"})
	// and closeCounters (every close reason, read-only once made), which
	// count once per connection.
	errorCounters sync.Map // protocol.Code -> prometheus.Counter
	upgraded      prometheus.Counter
	closeCounters map[string]prometheus.Counter
}

func newMetrics(conns func() int, hub func() room.Stats) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	const ns = "nbchat"
	m.errors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: ns, Name: "errors_total", Help: "Error replies sent, by error code.",
	}, []string{"code"})
	m.closes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: ns, Name: "closes_total", Help: "Closed WebSocket connections, by reason.",
	}, []string{"reason"})
	m.handshakes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: ns, Name: "handshakes_total", Help: "WebSocket upgrade requests, by HTTP status answered.",
	}, []string{"status"})
	m.rateLimited = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: ns, Name: "rate_limited_total", Help: "Messages refused by the per-connection rate limit.",
	})
	m.acceptFails = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: ns, Name: "accept_errors_total", Help: "Failed accepts (out of file descriptors, mostly); each one backs the listener off.",
	})
	m.reuseLate = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: ns, Name: "reuse_barrier_timeouts_total",
		Help: "Connections on a reused fd number registered before their poller finished its older event batches (it was stuck or too slow); nbio may drop such a connection.",
	})
	m.nameProbes = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: ns, Name: "name_probes_total",
		Help: "Pings sent to a connection because another connection asked for its name; one that does not answer in -name-probe is closed (closes_total{reason=\"unresponsive\"}).",
	})
	m.fanout = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: ns, Name: "broadcast_fanout_seconds",
		Help:    "Time to encode and queue one room broadcast to every member.",
		Buckets: prometheus.ExponentialBuckets(1e-6, 4, 10),
	})
	m.reg.MustRegister(m.errors, m.closes, m.handshakes, m.rateLimited, m.acceptFails, m.reuseLate, m.nameProbes, m.fanout,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: ns, Name: "connections", Help: "Open WebSocket connections.",
		}, func() float64 { return float64(conns()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: ns, Name: "rooms", Help: "Rooms with at least one member.",
		}, func() float64 { return float64(hub().Rooms) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: ns, Name: "messages_in_total", Help: "WebSocket messages received from clients.",
		}, func() float64 { return float64(m.messagesIn.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: ns, Name: "chat_messages_total", Help: "Room and direct messages accepted.",
		}, func() float64 { return float64(hub().Messages) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: ns, Name: "deliveries_total", Help: "Frames queued to recipients by broadcasts and direct messages.",
		}, func() float64 { return float64(hub().Deliveries) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: ns, Name: "bytes_out_total", Help: "Bytes handed to sockets for WebSocket connections.",
		}, func() float64 { return float64(m.bytesOut.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: ns, Name: "upgrades_fast_total", Help: "WebSocket upgrades read and accepted on the poller, without nbhttp; the others of handshakes_total{status=\"101\"} went through nbhttp.",
		}, func() float64 { return float64(m.fastUpgrades.Load()) }),
	)
	m.upgraded = m.handshakes.WithLabelValues("101")
	m.closeCounters = make(map[string]prometheus.Counter)
	for _, l := range []string{"slow_consumer", "rate_limit", "idle", "shutdown", "peer", "eof", "error", "protocol_error", "invalid_payload", "too_big", "internal", "unresponsive"} {
		m.closeCounters[l] = m.closes.WithLabelValues(l)
	}
	return m
}

func (m *metrics) errorFor(code protocol.Code) prometheus.Counter {
	if c, ok := m.errorCounters.Load(code); ok {
		return c.(prometheus.Counter)
	}
	c := m.errors.WithLabelValues(string(code))
	m.errorCounters.Store(code, c)
	return c
}

func (m *metrics) closed(label string) {
	if c, ok := m.closeCounters[label]; ok {
		c.Inc()
		return
	}
	m.closes.WithLabelValues(label).Inc()
}

func (m *metrics) observeBroadcast(_ int, d time.Duration) {
	m.fanout.Observe(d.Seconds())
}
