package main

import (
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/lesismal/nbio/logging"
	"github.com/lesismal/nbio/nbhttp"
	"golang.org/x/sys/unix"
)

const nRecvShards = 4

// gen is one process's share of the run (a "shard"): its clients, its nbio
// client engine and its counters. The coordinator drives it phase by phase.
type gen struct {
	cfg  *Config
	plan shardPlan

	engine     *nbhttp.Engine
	dialers    []*net.Dialer
	targets    []target       // one per -url node; client id uses nodeOf(id)
	joinedNode []atomic.Int64 // static and slow clients joined, per node
	roomNodes  bool           // count deliveries per (room, node): several nodes, room scenarios

	clients   []*client  // static clients by id-plan.Lo; nil for slow ones
	slow      []net.Conn // slow readers: plain sockets nobody reads after the ramp
	churnLive []*client
	st        stormState // scenario storm
	winAll    *hdrhistogram.Histogram
	shards    [nRecvShards]recvShard

	open, churnOpen, joined, failed atomic.Int64
	cleanCloses, forcedCloses       atomic.Int64
	sent, expected, rejected        atomic.Int64
	churnDialed, churnJoined        atomic.Int64

	mu        sync.Mutex
	members   []int64 // reading static members per room, over all processes
	failures  map[string]int64
	churnFail map[string]int64
	drops     map[string]int64 // static clients lost after joining
	churnDrop map[string]int64
	closeCode map[string]int64
	srvErrors map[string]int64
	connHist  *hdrhistogram.Histogram
	sentRoom  []int64
	notes     []string
	slowInfo  slowStats
	rssBefore int64
	rssRamp   int64
	openRamp  int64
}

func newGen(cfg *Config, plan shardPlan) (*gen, error) {
	logging.SetLevel(logging.LevelNone) // nbio logs every refused dial; we count them instead
	g := &gen{
		cfg: cfg, plan: plan,
		failures: map[string]int64{}, churnFail: map[string]int64{}, drops: map[string]int64{},
		churnDrop: map[string]int64{}, closeCode: map[string]int64{}, srvErrors: map[string]int64{},
		connHist: newHist(), sentRoom: make([]int64, max(cfg.Rooms, 1)),
	}
	g.winAll = newWinHist()
	if cfg.Scenario == "storm" {
		g.st = stormState{q: make(chan *client, plan.Hi-plan.Lo), done: make(chan struct{}),
			refused: map[string]int64{}, gaveUp: map[string]int64{}, hist: newHist()}
	}
	loopback := true
	for _, s := range cfg.urls() {
		t, err := parseTarget(s)
		if err != nil {
			return nil, err
		}
		g.targets = append(g.targets, t)
		loopback = loopback && t.loopbackV4
	}
	g.joinedNode = make([]atomic.Int64, len(g.targets))
	g.roomNodes = len(g.targets) > 1 && cfg.Rooms > 0 && cfg.Proto == "chat" && cfg.Scenario != "dm"
	for i := range g.shards {
		g.shards[i].hist, g.shards[i].win = newHist(), newWinHist()
		if g.roomNodes {
			g.shards[i].roomNode = make([]int64, cfg.Rooms*len(g.targets))
		}
	}
	if loopback {
		// Source addresses only make sense toward loopback, where 127/8 is ours.
		for i := 0; i < cfg.SrcIPs; i++ {
			src := &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+i))}
			g.dialers = append(g.dialers, &net.Dialer{LocalAddr: src, Timeout: cfg.HandshakeTimeout, Control: sockopts(0)})
		}
	}
	g.engine = nbhttp.NewEngine(nbhttp.Config{
		Name: "loadtest", NPoller: cfg.Pollers, ReadBufferSize: 64 << 10,
	})
	if err := g.engine.Start(); err != nil {
		return nil, err
	}
	g.rssBefore = settledRSS()
	return g, nil
}

func (g *gen) recvShard(id int32) *recvShard { return &g.shards[uint32(id)%nRecvShards] }

// target is the server node client id talks to.
func (g *gen) target(id int) *target { return &g.targets[nodeOf(id, len(g.targets))] }

func (g *gen) clientName(id int) string { return g.cfg.RunID + "-" + strconv.Itoa(id) }
func (g *gen) roomName(r int) string    { return g.cfg.RunID + "-r" + strconv.Itoa(r) }

// Plan helpers: every process derives the same roles from an id.

func roomOf(cfg *Config, id int) int {
	switch {
	case cfg.Proto == "raw":
		return 0 // a hub broadcasts to everyone: one implicit room
	case cfg.Rooms <= 0 || cfg.Scenario == "dm":
		return -1
	}
	return id % cfg.Rooms
}

func isSender(cfg *Config, id int) bool { return id < cfg.Senders }

// isSlow spreads the slow share evenly over the ids, never on a sender.
func isSlow(cfg *Config, id int) bool {
	if cfg.Scenario != "slow" || cfg.SlowFrac <= 0 || isSender(cfg, id) {
		return false
	}
	f := cfg.SlowFrac
	return int(float64(id+1)*f) > int(float64(id)*f)
}

// resolve counts a client once as joined or failed.
func (g *gen) resolve(c *client, ok bool, reason string) {
	if !c.resolved.CompareAndSwap(false, true) {
		return
	}
	if ok {
		c.joinedOK.Store(true)
	}
	switch {
	case c.kind == kindChurn && ok:
		g.churnJoined.Add(1)
	case c.kind == kindChurn:
		g.mu.Lock()
		g.churnFail[reason]++
		g.mu.Unlock()
	case ok:
		g.joined.Add(1)
		g.joinedNode[nodeOf(int(c.id), len(g.joinedNode))].Add(1)
	default:
		g.failed.Add(1)
		g.mu.Lock()
		g.failures[reason]++
		g.mu.Unlock()
	}
}

func (g *gen) addDrop(kind uint8, reason string) {
	g.mu.Lock()
	if kind == kindChurn {
		g.churnDrop[reason]++
	} else {
		g.drops[reason]++
	}
	g.mu.Unlock()
}

// note keeps a few examples of unexpected events for the report.
func (g *gen) note(format string, args ...any) {
	g.mu.Lock()
	if len(g.notes) < 10 {
		g.notes = append(g.notes, fmt.Sprintf(format, args...))
	}
	g.mu.Unlock()
}

func (g *gen) addCloseCode(code int) {
	g.mu.Lock()
	g.closeCode[strconv.Itoa(code)]++
	g.mu.Unlock()
}

// addServerError counts an error frame. A sender only sends msg/dm frames,
// so an error it gets is a rejected send: those deliveries are not expected.
func (g *gen) addServerError(c *client, code string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.srvErrors[code]++
	if c.kind == kindStatic && isSender(g.cfg, int(c.id)) && g.members != nil {
		g.rejected.Add(1)
		g.expected.Add(-g.perMsgLocked(c))
	}
}

// perMsgLocked is how many deliveries one message from c should cause.
func (g *gen) perMsgLocked(c *client) int64 {
	if g.cfg.Scenario == "dm" {
		n := int64(1)
		if p := g.client(int(c.id ^ 1)); p != nil && p.joinedOK.Load() && p.open.Load() && c.id^1 != c.id {
			n++
		}
		return n
	}
	if c.room >= 0 && int(c.room) < len(g.members) {
		return g.members[c.room]
	}
	return 0
}

func (g *gen) client(id int) *client {
	i := id - g.plan.Lo
	if i < 0 || i >= len(g.clients) {
		return nil
	}
	return g.clients[i]
}

func (g *gen) recordConnect(ns int64) {
	g.mu.Lock()
	_ = g.connHist.RecordValue(max(ns/1000, 1))
	g.mu.Unlock()
}

// tick is the 250 ms progress report of one process.
type tick struct {
	Open       int64   `json:"open"`
	ChurnOpen  int64   `json:"churn_open"`
	Joined     int64   `json:"joined"`
	Failed     int64   `json:"failed"`
	Sent       int64   `json:"sent"`
	Expected   int64   `json:"expected"`
	Deliv      int64   `json:"deliv"`
	Dups       int64   `json:"dups"`
	ChurnDeliv int64   `json:"churn_deliv"`
	WinCount   int64   `json:"win_count"`
	WinP99     int64   `json:"win_p99"`
	WinMax     int64   `json:"win_max"`
	RSS        int64   `json:"rss"`
	CPU        float64 `json:"cpu"`
}

func (g *gen) tick() tick {
	t := tick{
		Open: g.open.Load(), ChurnOpen: g.churnOpen.Load(), Joined: g.joined.Load(), Failed: g.failed.Load(),
		Sent: g.sent.Load(), Expected: g.expected.Load(),
	}
	win := g.winAll // only the tick goroutine uses it
	win.Reset()
	for i := range g.shards {
		s := &g.shards[i]
		s.mu.Lock()
		t.Deliv += s.c.Deliv
		t.Dups += s.c.Dups
		t.ChurnDeliv += s.c.ChurnDeliv
		win.Merge(s.win)
		s.win.Reset()
		s.mu.Unlock()
	}
	t.WinCount, t.WinP99, t.WinMax = win.TotalCount(), win.ValueAtQuantile(99), win.Max()
	t.RSS, t.CPU = procSelf()
	return t
}

// slowStats describes the clients that stop reading (scenario slow).
type slowStats struct {
	Connected      int64 `json:"connected"`
	ClosedByServer int64 `json:"closed_by_server"`
	StillOpen      int64 `json:"still_open"`
	BytesQueued    int64 `json:"bytes_read_at_check"`
}

// shardResult is everything a process reports at the end.
type shardResult struct {
	counts
	Joined       int64            `json:"joined"`
	Failed       int64            `json:"failed"`
	Failures     map[string]int64 `json:"failures"`
	ChurnDialed  int64            `json:"churn_dialed"`
	ChurnJoined  int64            `json:"churn_joined"`
	ChurnFail    map[string]int64 `json:"churn_failures"`
	Drops        map[string]int64 `json:"drops"`
	ChurnDrops   map[string]int64 `json:"churn_drops"`
	CloseCodes   map[string]int64 `json:"server_close_codes"`
	ServerErrors map[string]int64 `json:"server_errors"`
	Sent         int64            `json:"sent"`
	Expected     int64            `json:"expected"`
	Rejected     int64            `json:"rejected"`
	CleanCloses  int64            `json:"clean_closes"`
	ForcedCloses int64            `json:"forced_closes"`
	Slow         slowStats        `json:"slow"`
	Notes        []string         `json:"notes"`
	Latency      *histJSON        `json:"latency,omitempty"`
	Connect      *histJSON        `json:"connect,omitempty"`
	RoomNode     []int64          `json:"room_node_deliveries,omitempty"` // see recvShard.roomNode
	RSSBefore    int64            `json:"rss_before"`
	RSSRamp      int64            `json:"rss_after_ramp"`
	OpenRamp     int64            `json:"open_after_ramp"`
	CPU          float64          `json:"cpu_seconds"`
	Storm        *stormResult     `json:"storm,omitempty"`
}

func (g *gen) result() shardResult {
	r := shardResult{
		Joined: g.joined.Load(), Failed: g.failed.Load(), ChurnDialed: g.churnDialed.Load(), ChurnJoined: g.churnJoined.Load(),
		Sent: g.sent.Load(), Expected: g.expected.Load(), Rejected: g.rejected.Load(),
		CleanCloses: g.cleanCloses.Load(), ForcedCloses: g.forcedCloses.Load(),
	}
	all := newHist()
	for i := range g.shards {
		s := &g.shards[i]
		s.mu.Lock()
		r.counts.add(&s.c)
		all.Merge(s.hist)
		r.Notes = append(r.Notes, s.notes...)
		if s.roomNode != nil {
			if r.RoomNode == nil {
				r.RoomNode = make([]int64, len(s.roomNode))
			}
			for k, v := range s.roomNode {
				r.RoomNode[k] += v
			}
		}
		s.mu.Unlock()
	}
	lat := exportHist(all)
	r.Latency = &lat
	g.mu.Lock()
	conn := exportHist(g.connHist)
	r.Connect = &conn
	r.Failures, r.ChurnFail, r.Drops, r.ChurnDrops = g.failures, g.churnFail, g.drops, g.churnDrop
	r.CloseCodes, r.ServerErrors, r.Slow = g.closeCode, g.srvErrors, g.slowInfo
	r.RSSBefore, r.RSSRamp, r.OpenRamp = g.rssBefore, g.rssRamp, g.openRamp
	r.Notes = append(r.Notes, g.notes...)
	g.mu.Unlock()
	r.Storm = g.stormResult()
	_, r.CPU = procSelf()
	return r
}

// slowDialer is a plain dialer with a small receive buffer, so a client
// that stops reading pushes back on the server after a few KiB.
func (g *gen) slowDialer(id int) *net.Dialer {
	d := *g.dialer(id)
	d.Control = sockopts(4096)
	return &d
}

// sockopts sets IP_BIND_ADDRESS_NO_PORT, so binding a source address leaves
// the port choice to connect(), which searches by the whole 4-tuple: a plain
// bind(port 0) scans for a port no socket on that address uses and burns
// CPU once thousands of ports sit in TIME_WAIT. rcvbuf > 0 shrinks SO_RCVBUF.
func sockopts(rcvbuf int) func(string, string, syscall.RawConn) error {
	return func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) {
			_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
			if rcvbuf > 0 {
				_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, rcvbuf)
			}
		})
	}
}
