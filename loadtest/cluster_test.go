package main

import (
	"io"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

func TestURLList(t *testing.T) {
	cfg, err := parseFlags([]string{"-url", " ws://127.0.0.1:9101/ws, ws://127.0.0.1:9102/ws,,ws://127.0.0.1:9103/ws?x=1 "}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"ws://127.0.0.1:9101/ws", "ws://127.0.0.1:9102/ws", "ws://127.0.0.1:9103/ws?x=1"}
	if got := cfg.urls(); !reflect.DeepEqual(got, want) {
		t.Fatalf("urls %q, want %q", got, want)
	}
	wantM := []string{"http://127.0.0.1:9101/metrics", "http://127.0.0.1:9102/metrics", "http://127.0.0.1:9103/metrics"}
	if got := cfg.metricsURLs(); !reflect.DeepEqual(got, wantM) {
		t.Fatalf("metrics %q, want %q", got, wantM)
	}

	// One URL: the same default as before lists existed.
	cfg, err = parseFlags(nil, io.Discard)
	if err != nil || cfg.MetricsURL != "http://127.0.0.1:8080/metrics" || len(cfg.urls()) != 1 {
		t.Fatalf("single url: %v, metrics %q", err, cfg.MetricsURL)
	}
	cfg, err = parseFlags([]string{"-url", "ws://a:1/ws,ws://b:2/ws", "-metrics", "off"}, io.Discard)
	if err != nil || cfg.metricsURLs() != nil {
		t.Fatalf("-metrics off: %v %q", err, cfg.metricsURLs())
	}
	cfg, err = parseFlags([]string{"-url", "ws://a:1/ws,ws://b:2/ws", "-metrics", "http://a:1/m,http://b:2/m"}, io.Discard)
	if err != nil || cfg.metricsURLs()[1] != "http://b:2/m" {
		t.Fatalf("explicit -metrics list: %v", err)
	}

	for _, bad := range [][]string{
		{"-url", "ws://a:1/ws,wss://b:2/ws"},
		{"-url", "ws://a:1/ws,b:2"},
		{"-url", " , "},
		{"-url", "ws://a:1/ws,ws://b:2/ws", "-metrics", "http://a:1/metrics"},
		{"-preset", "cluster50k"},
		{"-preset", "cluster50k", "-url", "ws://a:1/ws,ws://b:2/ws"},
	} {
		if _, err := parseFlags(bad, io.Discard); err == nil {
			t.Errorf("%q: accepted", bad)
		}
	}
}

func TestRoomSpan(t *testing.T) {
	for _, tc := range []struct{ rooms, nodes, span int }{
		{500, 3, 3}, {510, 3, 1}, {6, 4, 2}, {7, 4, 4}, {0, 3, 1}, {100, 1, 1},
	} {
		if got := roomSpan(tc.rooms, tc.nodes); got != tc.span {
			t.Errorf("roomSpan(%d, %d) = %d, want %d", tc.rooms, tc.nodes, got, tc.span)
		}
	}
}

// TestCluster50kPlan checks the preset's layout without sockets: 17,000
// clients per node, every room on every node, every process under the
// file limit and talking to every node.
func TestCluster50kPlan(t *testing.T) {
	urls := "ws://127.0.0.1:9101/ws,ws://127.0.0.1:9102/ws,ws://127.0.0.1:9103/ws"
	cfg, err := parseFlags([]string{"-preset", "cluster50k", "-url", urls}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	n := len(cfg.urls())
	perNode := make([]int, n)
	roomNodes := make([][]int, cfg.Rooms)
	for i := range roomNodes {
		roomNodes[i] = make([]int, n)
	}
	for id := 0; id < cfg.Conns; id++ {
		node := nodeOf(id, n)
		perNode[node]++
		roomNodes[roomOf(cfg, id)][node]++
	}
	if !reflect.DeepEqual(perNode, []int{17000, 17000, 17000}) {
		t.Fatalf("clients per node %v", perNode)
	}
	for r, nodes := range roomNodes {
		for node, k := range nodes {
			if k < 30 {
				t.Fatalf("room %d has %d members on node %d: %v", r, k, node, nodes)
			}
		}
	}
	ps := plans(cfg)
	if len(ps) != 3 {
		t.Fatalf("%d processes", len(ps))
	}
	for _, p := range ps {
		if p.Hi-p.Lo >= 19000 {
			t.Fatalf("process %d holds %d sockets", p.Index, p.Hi-p.Lo)
		}
		seen := map[int]bool{}
		for id := p.Lo; id < p.Lo+n; id++ {
			seen[nodeOf(id, n)] = true
		}
		if len(seen) != n {
			t.Fatalf("process %d does not talk to every node", p.Index)
		}
	}
	// Each source address stays far below the ~28k ephemeral ports it has
	// toward one server port.
	if per := cfg.Conns / cfg.SrcIPs / n; per > 20000 {
		t.Fatalf("%d connections per source address and node", per)
	}
	if d := float64(cfg.Senders) * cfg.MsgRate * float64(cfg.Conns/cfg.Rooms); d < 45000 || d > 60000 {
		t.Fatalf("%.0f deliveries/s", d)
	}
}

func TestGenTargets(t *testing.T) {
	cfg := &Config{URL: "ws://127.0.0.1:1/ws,ws://127.0.0.1:2/ws?k=v,ws://127.0.0.1:3/ws", Proto: "chat", Scenario: "rooms",
		Rooms: 5, RunID: "ltx", SrcIPs: 2, HandshakeTimeout: 1, Pollers: 1}
	g, err := newGen(cfg, shardPlan{Lo: 0, Hi: 10})
	if err != nil {
		t.Fatal(err)
	}
	defer g.engine.Stop()
	if len(g.dialers) != 2 {
		t.Fatalf("%d source-address dialers toward loopback nodes", len(g.dialers))
	}
	for id, want := range []string{
		"http://127.0.0.1:1/ws?name=ltx-0&room=ltx-r0",
		"http://127.0.0.1:2/ws?k=v&name=ltx-1&room=ltx-r1",
		"http://127.0.0.1:3/ws?name=ltx-2&room=ltx-r2",
		"http://127.0.0.1:1/ws?name=ltx-3&room=ltx-r3",
		"http://127.0.0.1:2/ws?k=v&name=ltx-4&room=ltx-r4",
		"http://127.0.0.1:3/ws?name=ltx-5&room=ltx-r0",
	} {
		if got := g.dialURL(id, roomOf(cfg, id)); got != want {
			t.Errorf("client %d: %s, want %s", id, got, want)
		}
		if got := g.target(id).hostPort; got != "127.0.0.1:"+strconv.Itoa(id%3+1) {
			t.Errorf("client %d: slow dial to %s", id, got)
		}
	}
}

func TestSumSamples(t *testing.T) {
	a := &srvSample{RSS: 100, CPU: 1, Goroutines: 10, Conns: 5, MsgsIn: 7, Deliveries: 1000}
	b := &srvSample{RSS: 50, CPU: 0.5, Goroutines: 12, Conns: 6, MsgsIn: 3, Deliveries: 500}
	if got := sumSamples([]*srvSample{a, b}); !reflect.DeepEqual(got, &srvSample{RSS: 150, CPU: 1.5, Goroutines: 22, Conns: 11, MsgsIn: 10, Deliveries: 1500}) {
		t.Fatalf("sum %+v", got)
	}
	if got := sumSamples([]*srvSample{a}); got != a {
		t.Fatal("one node: its own sample")
	}
	if sumSamples([]*srvSample{a, nil}) != nil || sumSamples(nil) != nil || sumSamples([]*srvSample{nil}) != nil {
		t.Fatal("a total missing a node must be nil")
	}
}

func TestNodeFigures(t *testing.T) {
	cfg := &Config{URL: "ws://a:1/ws,ws://b:2/ws", MetricsURL: "http://a:1/metrics,http://b:2/metrics"}
	s := func(rss, cpu, conns, deliv float64) *srvSample {
		return &srvSample{RSS: rss, CPU: cpu, Conns: conns, Deliveries: deliv, Goroutines: 10, MsgsIn: deliv / 100}
	}
	snaps := nodeSnaps{
		start:   []*srvSample{s(10e6, 1, 0, 0), s(20e6, 2, 0, 0)},
		ramp:    []*srvSample{s(12e6, 3, 1000, 0), s(21e6, 2.5, 500, 0)},
		traffic: []*srvSample{s(12e6, 3, 1000, 100), s(21e6, 2.5, 500, 0)},
		drained: []*srvSample{s(12e6, 7, 1000, 2_000_100), nil},
	}
	series := []point{{Nodes: []*srvSample{s(15e6, 0, 0, 0), nil}}, {Nodes: []*srvSample{s(11e6, 0, 0, 0), s(30e6, 0, 0, 0)}}}
	o := outcome{nodes: snaps}
	o.ramp.JoinedNode = []int64{1000, 400}
	got := nodeFigures(cfg, o, series, []string{"", "timeout"})
	if len(got) != 2 {
		t.Fatalf("%d nodes", len(got))
	}
	a, b := got[0], got[1]
	if a.Node != 1 || a.URL != "ws://a:1/ws" || a.MetricsURL != "http://a:1/metrics" || !a.Available || a.Error != "" {
		t.Fatalf("node 1: %+v", a)
	}
	// Per connection: the node's RSS growth over the clients that joined through it.
	if a.RSSPerConn != 2000 || a.CPURamp != 2 || a.CPUPerConnUS != 2000 || a.RSSPeak != 15e6 || a.Conns != 1000 {
		t.Fatalf("node 1 ramp figures: %+v", a)
	}
	if a.CPUTraffic != 4 || a.Deliveries != 2_000_000 || a.CPUPerMillion != 2 || a.MsgsIn != 20000 {
		t.Fatalf("node 1 traffic figures: %+v", a)
	}
	if b.RSSPerConn != 1e6/400 || b.RSSPeak != 30e6 || b.CPUTraffic != 0 || b.CPUPerMillion != 0 || b.Error != "timeout" {
		t.Fatalf("node 2 (no sample after the drain): %+v", b)
	}
	if a.LossKnown || b.LossKnown {
		t.Fatal("loss known without traffic")
	}
	if nodeFigures(&Config{URL: "ws://a:1/ws"}, o, series, nil) != nil {
		t.Fatal("one node has no per-node section")
	}
	o = outcome{}
	o.ramp.JoinedNode = []int64{3, 4}
	if got := nodeFigures(cfg, o, nil, nil); got[1].Available || got[1].Joined != 4 || got[1].Error == "" {
		t.Fatalf("no samples: %+v", got[1])
	}
}

func TestNodeLoss(t *testing.T) {
	cfg := &Config{URL: "ws://a:1/ws,ws://b:2/ws", Rooms: 3, RunID: "ltx"}
	var o outcome
	// Members per (room, node): room*2 + node.
	o.ramp.MembersNode = []int64{2, 3, 0, 4, 1, 1}
	o.traffic.SentRoom = []int64{10, 5, 7}
	// Two processes' unique deliveries: room 0 on node 2 missed 4, room 2 on node 1 missed all 7.
	o.results = []shardResult{{RoomNode: []int64{20, 10, 0, 12}}, {RoomNode: []int64{0, 16, 0, 8, 0, 7}}}
	got := nodeFigures(cfg, o, nil, nil)
	a, b := got[0], got[1]
	if !a.LossKnown || a.Expected != 20+0+7 || a.Received != 20 || a.Lost != 7 || a.RoomsShort != 1 ||
		len(a.Short) != 1 || !strings.Contains(a.Short[0], "ltx-r2: 0 of 7 deliveries to its 1 members on node 1") {
		t.Fatalf("node 1: %+v", a)
	}
	if b.Expected != 30+20+7 || b.Received != 26+20+7 || b.Lost != 4 || b.RoomsShort != 1 {
		t.Fatalf("node 2: %+v", b)
	}
	o.results[1].Rejected = 1 // a rejected send is not expected anywhere: per-node loss is unknown
	if got := nodeFigures(cfg, o, nil, nil); got[0].LossKnown {
		t.Fatal("loss known despite a rejected send")
	}
}

// TestSmokeCluster runs the generator against a three-node fake cluster:
// clients go to node id%3 (from every worker process), deliveries cross
// nodes, and the per-node and whole-cluster figures come from each node's
// own /metrics.
func TestSmokeCluster(t *testing.T) {
	fs := startFakeCluster(t, 3, 0, false)
	cfg := smokeConfig(t, strings.Join(fs.URLs, ","))
	if !testing.Short() {
		cfg.PerProc = 100 // two worker processes
	}
	code, r, out := runAndRead(t, cfg)
	d := r.Deliveries
	if code != 0 || d.Lost != 0 || d.Expected == 0 || d.Received != d.Expected || r.Connect.Joined != 200 {
		t.Fatalf("exit %d, joined %d, expected %d, received %d, lost %d", code, r.Connect.Joined, d.Expected, d.Received, d.Lost)
	}
	fs.mu.Lock()
	for node, names := range fs.byNode {
		for _, name := range names {
			id, err := strconv.Atoi(name[strings.LastIndexByte(name, '-')+1:])
			if err != nil || id%3 != node {
				t.Errorf("%s connected to node %d", name, node)
			}
		}
	}
	fs.mu.Unlock()
	if len(r.Nodes) != 3 {
		t.Fatalf("%d nodes in the report", len(r.Nodes))
	}
	var deliv float64
	var expected int64
	for i, n := range r.Nodes {
		if !n.LossKnown || n.Lost != 0 || n.Received != n.Expected || n.Expected == 0 {
			t.Fatalf("node %d loss: %+v", i+1, n)
		}
		expected += n.Expected
		want := int64(67)
		if i == 2 {
			want = 66
		}
		if !n.Available || n.Joined != want || n.Conns != float64(want) || n.URL != fs.URLs[i] {
			t.Fatalf("node %d: %+v", i+1, n)
		}
		// The fake grows 1000 B per connection and 1 CPU s per million deliveries.
		if n.RSSPerConn != 1000 || n.Deliveries == 0 || math.Abs(n.CPUPerMillion-1) > 1e-6 {
			t.Fatalf("node %d figures: %+v", i+1, n)
		}
		deliv += n.Deliveries
	}
	s := r.Server
	if !s.Available || s.RSSPerConn != 1000 || math.Abs(s.CPUPerMillion-1) > 1e-6 || s.RSSAfterRamp != 3*(10<<20)+200*1000 {
		t.Fatalf("cluster totals: %+v", s)
	}
	if deliv != float64(d.Received) || expected != d.Expected {
		t.Fatalf("nodes counted %.0f deliveries, clients %d; nodes expected %d, run %d", deliv, d.Received, expected, d.Expected)
	}
	last := r.Series[len(r.Series)-1]
	if len(last.Nodes) != 3 || last.Server == nil || last.Server.Conns != last.Nodes[0].Conns+last.Nodes[1].Conns+last.Nodes[2].Conns {
		t.Fatalf("series point: %+v", last)
	}
	if !strings.Contains(out, "cluster:    3 nodes") || !strings.Contains(out, "  node 3:   "+fs.URLs[2]) {
		t.Fatalf("summary lacks the cluster lines")
	}
	html, err := os.ReadFile(filepath.Join(cfg.Out, "report.html"))
	if err != nil || !strings.Contains(string(html), "<h2>Cluster nodes</h2>") || !strings.Contains(string(html), "node 3 RSS (MiB)") {
		t.Fatalf("report.html lacks the node table or chart (%v)", err)
	}
}

// TestNodeLossFound: a room whose messages never reach one node's members
// fails the run, and the report names the node and the room.
func TestNodeLossFound(t *testing.T) {
	fs := startFakeCluster(t, 3, 0, false)
	fs.mu.Lock()
	fs.mute = func(node int, room string) bool { return node == 1 && strings.HasSuffix(room, "-r3") }
	fs.mu.Unlock()
	cfg := smokeConfig(t, strings.Join(fs.URLs, ","))
	code, r, out := runAndRead(t, cfg)
	if code != 1 || r.Deliveries.Lost == 0 || r.Deliveries.Gaps != 0 {
		t.Fatalf("exit %d, lost %d, gaps %d", code, r.Deliveries.Lost, r.Deliveries.Gaps)
	}
	for i, n := range r.Nodes {
		switch {
		case i != 1 && (n.Lost != 0 || n.RoomsShort != 0):
			t.Fatalf("node %d: %+v", i+1, n)
		case i == 1 && (n.Lost != r.Deliveries.Lost || n.RoomsShort != 1 || len(n.Short) != 1 || !strings.Contains(n.Short[0], "-r3: 0 of ")):
			t.Fatalf("node 2: %+v", n)
		}
	}
	if !strings.Contains(out, "short: room "+cfg.RunID+"-r3: 0 of") {
		t.Fatal("summary does not name the short room")
	}
}

// TestSingleURLReportUnchanged: one -url keeps the single-server report.
func TestSingleURLReportUnchanged(t *testing.T) {
	fs := startFake(t, 0, false)
	cfg := smokeConfig(t, fs.URL)
	cfg.Conns, cfg.Duration = 50, 0
	code, r, out := runAndRead(t, cfg)
	if code != 0 || r.Nodes != nil || strings.Contains(out, "cluster") || !strings.Contains(out, "\nserver:     RSS") {
		t.Fatalf("exit %d, nodes %v, summary:\n%s", code, r.Nodes, out)
	}
	for _, p := range r.Series {
		if p.Nodes != nil {
			t.Fatal("a single node's series has per-node samples")
		}
	}
	b, _ := os.ReadFile(filepath.Join(cfg.Out, "report.json"))
	if strings.Contains(string(b), `"nodes"`) || strings.Contains(string(b), "joined_per_node") {
		t.Fatal("report.json of a single node has per-node fields")
	}
	html, _ := os.ReadFile(filepath.Join(cfg.Out, "report.html"))
	if strings.Contains(string(html), "Cluster nodes") {
		t.Fatal("report.html of a single node has the node table")
	}
}
