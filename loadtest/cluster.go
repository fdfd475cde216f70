package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
)

// A cluster run gives -url one WebSocket URL per server node. Client id i
// talks to node i % n, in every worker process, so with -rooms coprime to n
// each room has members (and its sender's readers) on every node. /metrics
// is read from every node; the report has per-node figures and the
// whole-cluster totals (the Server section, computed from the sums).

// splitList splits a comma-separated flag value, dropping blanks.
func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// urls is the -url list: one WebSocket URL per server node.
func (c *Config) urls() []string { return splitList(c.URL) }

// metricsURLs is the -metrics list, one per node; nil when "off".
func (c *Config) metricsURLs() []string {
	if c.MetricsURL == "off" {
		return nil
	}
	return splitList(c.MetricsURL)
}

// nodeOf is the node client id talks to: round-robin over all ids.
func nodeOf(id, nodes int) int {
	if nodes <= 1 || id < 0 {
		return 0
	}
	return id % nodes
}

// presetNodes is the fewest -url nodes a preset needs: its connections do
// not fit one server process.
var presetNodes = map[string]int{"cluster50k": 3}

// checkURLs validates -url and -metrics and derives the default metrics
// URLs (http://HOST/metrics for each -url).
func (c *Config) checkURLs() error {
	urls := c.urls()
	if len(urls) == 0 {
		return fmt.Errorf("-url is empty")
	}
	var metrics []string
	for _, s := range urls {
		u, err := url.Parse(s)
		if err != nil || (u.Scheme != "ws" && u.Scheme != "http") || u.Host == "" {
			return fmt.Errorf("-url %q: want ws://host:port/path (wss is not supported)", s)
		}
		metrics = append(metrics, "http://"+u.Host+"/metrics")
	}
	if n := presetNodes[c.Preset]; len(urls) < n {
		return fmt.Errorf("-preset %s needs %d server nodes in -url (got %d); loadtest/cluster.sh starts them", c.Preset, n, len(urls))
	}
	switch {
	case c.MetricsURL == "":
		c.MetricsURL = strings.Join(metrics, ",")
	case c.MetricsURL != "off" && len(c.metricsURLs()) != len(urls):
		return fmt.Errorf("-metrics lists %d URLs for %d -url nodes", len(c.metricsURLs()), len(urls))
	}
	return nil
}

// roomSpan is how many nodes each room has members on: rooms are id % R,
// nodes id % n, so a room's members cover n / gcd(R, n) nodes.
func roomSpan(rooms, nodes int) int {
	if rooms <= 0 || nodes <= 1 {
		return 1
	}
	a, b := rooms, nodes
	for b != 0 {
		a, b = b, a%b
	}
	return nodes / a
}

// target is one server node's address, from -url.
type target struct {
	httpURL      string // the URL with an http scheme, for nbhttp's ClientConn
	hostPort     string
	baseHasQuery bool
	loopbackV4   bool
}

func parseTarget(s string) (target, error) {
	u, err := url.Parse(s)
	if err != nil {
		return target{}, err
	}
	t := target{hostPort: u.Host, baseHasQuery: u.RawQuery != ""}
	if u.Port() == "" {
		t.hostPort = net.JoinHostPort(u.Hostname(), "80")
	}
	ip := net.ParseIP(u.Hostname())
	t.loopbackV4 = ip != nil && ip.IsLoopback() && ip.To4() != nil
	u.Scheme = strings.Replace(strings.Replace(u.Scheme, "wss", "https", 1), "ws", "http", 1)
	t.httpURL = u.String()
	return t, nil
}

// roomNodeSlot is 1 + c's index in the per-(room, node) counters, or 0
// when they are not kept or c is not a static room member.
func (g *gen) roomNodeSlot(c *client) int32 {
	if !g.roomNodes || c.room < 0 || c.kind != kindStatic {
		return 0
	}
	n := len(g.targets)
	return int32(int(c.room)*n+nodeOf(int(c.id), n)) + 1
}

// addSlice adds src to dst element by element, growing dst as needed.
func addSlice(dst, src []int64) []int64 {
	for len(dst) < len(src) {
		dst = append(dst, 0)
	}
	for i, v := range src {
		dst[i] += v
	}
	return dst
}

// sumSamples adds the nodes' samples; nil unless every node answered, so
// a total never silently misses a node.
func sumSamples(nodes []*srvSample) *srvSample {
	if len(nodes) == 1 {
		return nodes[0]
	}
	var t srvSample
	for _, s := range nodes {
		if s == nil {
			return nil
		}
		t.RSS += s.RSS
		t.CPU += s.CPU
		t.Goroutines += s.Goroutines
		t.Conns += s.Conns
		t.MsgsIn += s.MsgsIn
		t.Deliveries += s.Deliveries
	}
	if len(nodes) == 0 {
		return nil
	}
	return &t
}

// scrape reads every node's /metrics at once. total is their sum (nil if
// a node did not answer: the report then says so instead of failing, as a
// foreign server may have no metrics); nodes[i] is node i's sample or nil.
func (co *coordinator) scrape() (total *srvSample, nodes []*srvSample) {
	urls := co.cfg.metricsURLs()
	if len(urls) == 0 {
		return nil, nil
	}
	nodes = make([]*srvSample, len(urls))
	errs := make([]string, len(urls))
	var wg sync.WaitGroup
	for i, u := range urls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			nodes[i], errs[i] = co.scrapeOne(u)
		}()
	}
	wg.Wait()
	co.mu.Lock()
	if co.nodeErr == nil {
		co.nodeErr = make([]string, len(urls))
	}
	for i, e := range errs {
		if e == "" {
			continue
		}
		co.nodeErr[i] = e
		if len(urls) > 1 {
			e = urls[i] + ": " + e
		}
		co.srvError = e
	}
	co.mu.Unlock()
	return sumSamples(nodes), nodes
}

func (co *coordinator) scrapeOne(u string) (*srvSample, string) {
	resp, err := co.client.Get(u)
	if err != nil {
		return nil, err.Error()
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, resp.Status
	}
	return parseMetrics(resp.Body), ""
}

// nodeSnaps are every node's samples at the phase boundaries.
type nodeSnaps struct {
	start, ramp, traffic, drained []*srvSample
}

// nodeReport is one cluster node's server figures.
type nodeReport struct {
	Node          int     `json:"node"`
	URL           string  `json:"url"`
	MetricsURL    string  `json:"metrics_url"`
	Available     bool    `json:"available"`
	Error         string  `json:"error,omitempty"`
	Joined        int64   `json:"joined"`                 // generator clients that joined through this node
	Conns         float64 `json:"connections_after_ramp"` // the node's own nbchat_connections
	RSSBefore     float64 `json:"rss_before"`
	RSSAfterRamp  float64 `json:"rss_after_ramp"`
	RSSPeak       float64 `json:"rss_peak"`
	RSSPerConn    float64 `json:"rss_per_conn"`
	Goroutines    float64 `json:"goroutines_after_ramp"`
	GoroutinesMax float64 `json:"goroutines_max"`
	CPURamp       float64 `json:"cpu_seconds_ramp"`
	CPUPerConnUS  float64 `json:"cpu_us_per_connection"`
	CPUTraffic    float64 `json:"cpu_seconds_traffic"`
	MsgsIn        float64 `json:"messages_in_traffic"`
	Deliveries    float64 `json:"deliveries_traffic"` // the node's nbchat_deliveries_total over traffic and drain
	CPUPerMillion float64 `json:"cpu_seconds_per_million_deliveries"`

	// Loss among the clients on this node, from the generator's own
	// counts per (room, node): known in room scenarios without rejected sends.
	LossKnown  bool     `json:"loss_known"`
	Expected   int64    `json:"expected"`
	Received   int64    `json:"received_unique"`
	Lost       int64    `json:"lost"`
	RoomsShort int      `json:"rooms_short"` // rooms whose members on this node missed deliveries
	Short      []string `json:"short_examples,omitempty"`
}

// nodeFigures computes each node's figures from its samples at the phase
// boundaries, its per-second series, the clients joined through it and
// what they received. nil for a single node: its figures are the Server
// section.
func nodeFigures(cfg *Config, o outcome, series []point, errs []string) []nodeReport {
	snaps, joined := o.nodes, o.ramp.JoinedNode
	urls, murls := cfg.urls(), cfg.metricsURLs()
	if len(urls) < 2 {
		return nil
	}
	at := func(ss []*srvSample, i int) *srvSample {
		if i < len(ss) {
			return ss[i]
		}
		return nil
	}
	out := make([]nodeReport, len(urls))
	for i := range out {
		n := &out[i]
		n.Node, n.URL = i+1, urls[i]
		if i < len(murls) {
			n.MetricsURL = murls[i]
		}
		if i < len(joined) {
			n.Joined = joined[i]
		}
		if i < len(errs) {
			n.Error = errs[i]
		}
		start, ramp := at(snaps.start, i), at(snaps.ramp, i)
		if start == nil || ramp == nil {
			if n.Error == "" {
				n.Error = "metrics not available"
			}
			continue
		}
		n.Available = true
		n.Conns, n.RSSBefore, n.RSSAfterRamp, n.Goroutines = ramp.Conns, start.RSS, ramp.RSS, ramp.Goroutines
		n.CPURamp = ramp.CPU - start.CPU
		conns := float64(n.Joined)
		if conns <= 0 {
			conns = ramp.Conns - start.Conns
		}
		if conns > 0 {
			n.RSSPerConn = (ramp.RSS - start.RSS) / conns
			n.CPUPerConnUS = n.CPURamp / conns * 1e6
		}
		n.RSSPeak, n.GoroutinesMax = ramp.RSS, ramp.Goroutines
		for _, p := range series {
			if s := at(p.Nodes, i); s != nil {
				n.RSSPeak = max(n.RSSPeak, s.RSS)
				n.GoroutinesMax = max(n.GoroutinesMax, s.Goroutines)
			}
		}
		tr, dr := at(snaps.traffic, i), at(snaps.drained, i)
		if tr != nil && dr != nil {
			n.CPUTraffic, n.MsgsIn, n.Deliveries = dr.CPU-tr.CPU, dr.MsgsIn-tr.MsgsIn, dr.Deliveries-tr.Deliveries
			if n.Deliveries > 0 {
				n.CPUPerMillion = n.CPUTraffic / (n.Deliveries / 1e6)
			}
		}
	}
	nodeLoss(cfg, o, out)
	return out
}

// nodeLoss fills each node's expected, received and lost deliveries: a
// room's members on a node should each get every message sent to the room.
func nodeLoss(cfg *Config, o outcome, out []nodeReport) {
	n := len(out)
	members, sent := o.ramp.MembersNode, o.traffic.SentRoom
	var got []int64
	var rejected int64
	for _, r := range o.results {
		got = addSlice(got, r.RoomNode)
		rejected += r.Rejected
	}
	if n == 0 || cfg.Rooms <= 0 || rejected > 0 || len(members) != cfg.Rooms*n || len(got) != len(members) || len(sent) < cfg.Rooms {
		return
	}
	for i := range out {
		out[i].LossKnown = true
	}
	for room := 0; room < cfg.Rooms; room++ {
		for node := 0; node < n; node++ {
			k := room*n + node
			want := sent[room] * members[k]
			nr := &out[node]
			nr.Expected += want
			nr.Received += got[k]
			if got[k] < want {
				nr.Lost += want - got[k]
				nr.RoomsShort++
				if len(nr.Short) < 5 {
					nr.Short = append(nr.Short, fmt.Sprintf("room %s-r%d: %d of %d deliveries to its %d members on node %d",
						cfg.RunID, room, got[k], want, members[k], node+1))
				}
			}
		}
	}
}

// printNodes writes one summary line per node.
func printNodes(w io.Writer, nodes []nodeReport) {
	for _, n := range nodes {
		if n.Available {
			fmt.Fprintf(w, "  node %d:   %s: %d joined (server: %.0f conns); RSS %.1f MiB (%+.0f B/conn), peak %.1f MiB; goroutines %.0f (max %.0f); CPU ramp %.2fs (%.1f us/conn), traffic %.2fs for %.0f deliveries = %.2fs per million\n",
				n.Node, n.URL, n.Joined, n.Conns, n.RSSAfterRamp/(1<<20), n.RSSPerConn, n.RSSPeak/(1<<20), n.Goroutines, n.GoroutinesMax,
				n.CPURamp, n.CPUPerConnUS, n.CPUTraffic, n.Deliveries, n.CPUPerMillion)
		} else {
			fmt.Fprintf(w, "  node %d:   %s: %d joined; no metrics (%s)\n", n.Node, n.URL, n.Joined, n.Error)
		}
		if n.LossKnown {
			fmt.Fprintf(w, "            its clients: %d deliveries expected, %d received, %d lost (rooms short here: %d)\n",
				n.Expected, n.Received, n.Lost, n.RoomsShort)
			for _, s := range n.Short {
				fmt.Fprintln(w, "            short:", s)
			}
		}
	}
}
