// Package cluster joins nbchat nodes into one chat over NATS.
//
// Nodes find each other by heartbeats on a NATS subject. Every room and
// every user name has an owner: the live node that ranks first for it by
// rendezvous hashing, so all nodes agree on it without talking, and a
// node joining or leaving moves only its share. A room's owner numbers its
// messages; the other nodes forward their members' requests to it and fan
// its messages out to their members (see package room, cluster.go).
//
// Subjects, under the prefix (default "nbchat"):
//
//	PREFIX.hb        heartbeats: a node's name, every Heartbeat
//	PREFIX.bye       a node leaving on purpose
//	PREFIX.o.NODE    requests to NODE as an owner, in order per sender
//	PREFIX.n.NODE    deliveries to NODE's members, in order per sender
//	PREFIX.q.NODE    requests that wait for an answer (claims, names)
//	PREFIX.dir       the busiest rooms each node owns, every 4 heartbeats
//
// NATS keeps the order of messages from one connection, and each node
// publishes on one connection, so an owner's messages reach every node in
// the order the owner sent them.
package cluster

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"nbchat/room"
)

// Config configures a Node.
type Config struct {
	// URLs are the NATS servers, e.g. nats://127.0.0.1:4222.
	URLs []string
	// Name names this node; it must be unique in the cluster. Default: a
	// random one.
	Name string
	// Prefix starts every subject, so clusters can share a NATS server.
	// Default "nbchat".
	Prefix string
	// Heartbeat is how often a node says it is alive; a node not heard for
	// DeadAfter is dropped, with its members. Defaults 500ms and 3s.
	Heartbeat time.Duration
	DeadAfter time.Duration
	// Timeout bounds requests that wait for another node. Default 2s.
	Timeout time.Duration
	// WriteTimeout bounds a write to NATS: a link that stopped draining is
	// dropped after it and reconnected, while nats.go buffers what is
	// published meanwhile. (Pollers never wait for NATS either way: what
	// they send goes through the outbox.) Default 1s.
	WriteTimeout time.Duration
	// Logger receives membership changes and errors.
	Logger *slog.Logger
}

// Node is this server's membership in a cluster. It implements
// room.Cluster.
type Node struct {
	cfg  Config
	name string
	log  *slog.Logger
	nc   *nats.Conn
	hub  *room.Hub

	// view is the sorted names of the live nodes, this one included.
	view atomic.Pointer[[]string]

	mu       sync.Mutex
	lastSeen map[string]time.Time
	// incarnation tells a node that crashed and came back under the same
	// name from one that never left: what the old one held must go.
	incarnation string
	peerInc     map[string]string
	restarted   []string
	// dirs are the rooms each other node owns, as it last announced them.
	dirs map[string][]room.RoomCount
	// upSince is when the NATS connection last came up: peers are not
	// declared dead for missing heartbeats we could not have heard.
	upSince time.Time
	down    bool

	wake chan struct{}
	stop chan struct{}
	done chan struct{}
	subs []*nats.Subscription

	bufs sync.Pool
	out  *outbox

	sent, received, dropped atomic.Uint64
}

// New connects to NATS. Start joins the cluster once the hub exists.
func New(cfg Config) (*Node, error) {
	if len(cfg.URLs) == 0 {
		return nil, errors.New("cluster: no NATS URL")
	}
	if cfg.Name == "" {
		var b [4]byte
		_, _ = rand.Read(b[:])
		cfg.Name = "node-" + hex.EncodeToString(b[:])
	}
	if strings.ContainsAny(cfg.Name, ".*> \t") {
		return nil, fmt.Errorf("cluster: node name %q may not contain '.', '*', '>' or spaces", cfg.Name)
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "nbchat"
	}
	if cfg.Heartbeat == 0 {
		cfg.Heartbeat = 500 * time.Millisecond
	}
	if cfg.DeadAfter == 0 {
		cfg.DeadAfter = 3 * time.Second
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 2 * time.Second
	}
	if cfg.WriteTimeout == 0 {
		cfg.WriteTimeout = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	n := &Node{
		cfg: cfg, name: cfg.Name, log: cfg.Logger.With("node", cfg.Name),
		lastSeen: make(map[string]time.Time),
		peerInc:  make(map[string]string),
		dirs:     make(map[string][]room.RoomCount),
		upSince:  time.Now(),
		wake:     make(chan struct{}, 1),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	n.incarnation = strconv.FormatInt(time.Now().UnixNano(), 36)
	n.bufs.New = func() any { b := make([]byte, 0, 1024); return &b }
	n.setView([]string{n.name})
	nc, err := nats.Connect(strings.Join(cfg.URLs, ","),
		nats.Name("nbchat "+cfg.Name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250*time.Millisecond),
		nats.ReconnectBufSize(64<<20),
		nats.FlusherTimeout(cfg.WriteTimeout),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			n.mu.Lock()
			n.down = true
			n.mu.Unlock()
			n.log.Warn("disconnected from NATS", "err", err)
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			n.mu.Lock()
			n.down, n.upSince = false, time.Now()
			n.mu.Unlock()
			n.log.Info("reconnected to NATS", "url", nc.ConnectedUrl())
			if n.hub != nil {
				go n.afterReconnect()
			}
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			if errors.Is(err, nats.ErrSlowConsumer) {
				n.dropped.Add(1)
			}
			n.log.Warn("NATS error", "err", err)
		}),
	)
	if err != nil {
		return nil, fmt.Errorf("cluster: connecting to NATS: %w", err)
	}
	n.nc = nc
	n.out = newOutbox(n)
	return n, nil
}

// Name returns this node's name.
func (n *Node) Name() string { return n.name }

// Nodes returns the live nodes' names, sorted.
func (n *Node) Nodes() []string { return slices.Clone(*n.view.Load()) }

func (n *Node) subject(kind, node string) string {
	return n.cfg.Prefix + "." + kind + "." + node
}

// Start joins the cluster: it subscribes and announces itself at once, so
// nodes starting together see each other, then listens to heartbeats for a
// while (at most two seconds) to learn the live nodes. Requests that arrive
// meanwhile wait until it knows whom to claim rooms from.
func (n *Node) Start(h *room.Hub) error {
	n.hub = h
	ready := make(chan struct{})
	handle := func(subj string, f func(*room.Envelope)) error {
		sub, err := n.nc.Subscribe(subj, func(m *nats.Msg) {
			<-ready
			var e room.Envelope
			if err := decodeEnvelope(m.Data, &e); err != nil {
				n.log.Warn("bad cluster message", "subject", m.Subject, "err", err)
				return
			}
			n.received.Add(1)
			f(&e)
		})
		if err == nil {
			_ = sub.SetPendingLimits(1<<20, 256<<20)
			n.subs = append(n.subs, sub)
		}
		return err
	}
	if err := handle(n.subject("o", n.name), h.HandleOwner); err != nil {
		return err
	}
	if err := handle(n.subject("n", n.name), h.HandleNode); err != nil {
		return err
	}
	subscribe := func(subj string, f nats.MsgHandler) error {
		sub, err := n.nc.Subscribe(subj, f)
		if err == nil {
			n.subs = append(n.subs, sub)
		}
		return err
	}
	// Queries are served concurrently: a claim that waits for a room's
	// stored messages must not hold up name registrations behind it.
	if err := subscribe(n.subject("q", n.name), func(m *nats.Msg) { go func() { <-ready; n.serveQuery(m) }() }); err != nil {
		return err
	}
	if err := subscribe(n.cfg.Prefix+".hb", n.onHeartbeat); err != nil {
		return err
	}
	if err := subscribe(n.cfg.Prefix+".bye", n.onBye); err != nil {
		return err
	}
	if err := subscribe(n.cfg.Prefix+".dir", n.onDirectory); err != nil {
		return err
	}
	// The subscriptions reach the server before the heartbeat does.
	if err := n.nc.Publish(n.cfg.Prefix+".hb", n.heartbeat()); err != nil {
		return err
	}
	if err := n.nc.Flush(); err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	go n.run()
	time.Sleep(min(2*time.Second, 2*n.cfg.Heartbeat+100*time.Millisecond))
	n.recompute()
	close(ready)
	n.log.Info("joined the cluster", "nodes", n.Nodes())
	return nil
}

// Leave hands everything this node owns to the others before it goes, as
// in a rolling restart: it stops its heartbeats, takes itself out of its
// own view, lets the new owners claim its rooms (with their seqs, history
// and members) and sends them its users' direct messages, waits until they
// have (at most Timeout), and says goodbye. Its connections keep working
// through the new owners until the server closes them.
func (n *Node) Leave() {
	if !n.stopRun() || n.hub == nil {
		return
	}
	view := *n.view.Load()
	others := slices.DeleteFunc(slices.Clone(view), func(s string) bool { return s == n.name })
	if len(others) > 0 {
		n.hub.RestoreOwned() // while this node still owns them
		n.setView(others)
		n.hub.Rehome(nil)
		deadline := time.Now().Add(n.cfg.Timeout)
		for n.hub.OwnedRooms() > 0 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if left := n.hub.OwnedRooms(); left > 0 {
			n.log.Warn("left the cluster before every room was handed over", "rooms", left)
		}
	}
	n.out.flush(n.cfg.Timeout)
	_ = n.nc.Publish(n.cfg.Prefix+".bye", []byte(n.name))
	_ = n.nc.Flush()
}

// stopRun stops the heartbeats once; it reports whether this call did.
func (n *Node) stopRun() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	select {
	case <-n.stop:
		return false
	default:
	}
	close(n.stop)
	if n.hub != nil {
		n.mu.Unlock()
		<-n.done
		n.mu.Lock()
	}
	return true
}

// Close says goodbye, so the others drop this node at once (if Leave did
// not), and disconnects after sending what is queued.
func (n *Node) Close() {
	stopped := n.stopRun()
	n.out.close(n.cfg.Timeout)
	if stopped {
		_ = n.nc.Publish(n.cfg.Prefix+".bye", []byte(n.name))
	}
	if n.nc.IsClosed() {
		return
	}
	_ = n.nc.Drain()
	deadline := time.Now().Add(n.cfg.Timeout)
	for !n.nc.IsClosed() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	n.nc.Close()
}

// run sends heartbeats and notices nodes coming and going.
func (n *Node) run() {
	defer close(n.done)
	t := time.NewTicker(n.cfg.Heartbeat)
	defer t.Stop()
	for tick := 0; ; {
		select {
		case <-n.stop:
			return
		case <-t.C:
			_ = n.nc.Publish(n.cfg.Prefix+".hb", n.heartbeat())
			if tick++; tick%directoryEvery == 0 {
				n.announceRooms()
			}
		case <-n.wake:
		}
		n.recompute()
	}
}

// afterReconnect waits until every peer has been heard again, or
// DeadAfter, and then lets the hub catch up. A peer's heartbeat after our
// reconnect means its subscriptions are back (nats.go restores them before
// it sends anything), so what we resend then is not lost.
func (n *Node) afterReconnect() {
	deadline := time.Now().Add(n.cfg.DeadAfter)
	for time.Now().Before(deadline) {
		n.mu.Lock()
		ready := true
		for _, seen := range n.lastSeen {
			if seen.Before(n.upSince) {
				ready = false
			}
		}
		n.mu.Unlock()
		if ready {
			break
		}
		time.Sleep(n.cfg.Heartbeat / 4)
	}
	n.hub.Reconnected()
}

// heartbeat is "NAME INCARNATION".
func (n *Node) heartbeat() []byte { return []byte(n.name + " " + n.incarnation) }

func (n *Node) onHeartbeat(m *nats.Msg) {
	peer, inc, _ := strings.Cut(string(m.Data), " ")
	if peer == n.name {
		return
	}
	n.mu.Lock()
	_, known := n.lastSeen[peer]
	n.lastSeen[peer] = time.Now()
	old, seen := n.peerInc[peer]
	n.peerInc[peer] = inc
	restarted := seen && old != inc
	if restarted {
		n.restarted = append(n.restarted, peer)
	}
	n.mu.Unlock()
	if !known || restarted {
		// Answer a newcomer at once, so it knows every node before it
		// serves anyone.
		_ = n.nc.Publish(n.cfg.Prefix+".hb", n.heartbeat())
		n.poke()
	}
}

// directoryEvery is how many heartbeats pass between announcements of the
// rooms a node owns (for the rooms list, which is that stale at most).
const directoryEvery = 4

// maxAnnounced caps the rooms one announcement lists: a rooms request
// shows the busiest 100 of the whole cluster.
const maxAnnounced = 100

// announceRooms tells the other nodes the busiest rooms this node owns.
func (n *Node) announceRooms() {
	if n.hub == nil {
		return
	}
	list := n.hub.OwnedCounts(maxAnnounced)
	b := appendString([]byte{wireVersion}, n.name)
	b = binary.AppendUvarint(b, uint64(len(list)))
	for _, rc := range list {
		b = appendString(b, rc.Name)
		b = binary.AppendUvarint(b, uint64(rc.Count))
	}
	_ = n.nc.Publish(n.cfg.Prefix+".dir", b)
}

func (n *Node) onDirectory(m *nats.Msg) {
	d := decoder{b: m.Data}
	if d.byte() != wireVersion {
		return
	}
	peer := d.string()
	count := d.uvarint()
	if peer == n.name || count > uint64(len(m.Data)) {
		return
	}
	list := make([]room.RoomCount, 0, count)
	for range count {
		list = append(list, room.RoomCount{Name: d.string(), Count: int(d.uvarint())})
	}
	if d.err != nil {
		return
	}
	n.mu.Lock()
	if _, live := n.lastSeen[peer]; live {
		n.dirs[peer] = list
	}
	n.mu.Unlock()
}

// Directory implements room.Cluster.
func (n *Node) Directory() []room.RoomCount {
	n.mu.Lock()
	defer n.mu.Unlock()
	var all []room.RoomCount
	for _, list := range n.dirs {
		all = append(all, list...)
	}
	return all
}

func (n *Node) onBye(m *nats.Msg) {
	n.mu.Lock()
	delete(n.lastSeen, string(m.Data))
	delete(n.peerInc, string(m.Data))
	n.mu.Unlock()
	n.poke()
}

func (n *Node) poke() {
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

// recompute drops peers not heard from and, if the live set changed, hands
// rooms and users over (room.Hub.Rehome). It runs on one goroutine.
func (n *Node) recompute() {
	now := time.Now()
	n.mu.Lock()
	if !n.down && now.Sub(n.upSince) > n.cfg.DeadAfter {
		for peer, seen := range n.lastSeen {
			if now.Sub(seen) > n.cfg.DeadAfter {
				delete(n.lastSeen, peer)
			}
		}
	}
	live := []string{n.name}
	for peer := range n.lastSeen {
		live = append(live, peer)
	}
	for peer := range n.peerInc {
		if _, ok := n.lastSeen[peer]; !ok {
			delete(n.peerInc, peer)
		}
	}
	for peer := range n.dirs {
		if _, ok := n.lastSeen[peer]; !ok {
			delete(n.dirs, peer)
		}
	}
	gone := n.restarted
	n.restarted = nil
	n.mu.Unlock()
	slices.Sort(live)
	old := *n.view.Load()
	if slices.Equal(old, live) && len(gone) == 0 {
		return
	}
	for _, p := range old {
		if _, ok := slices.BinarySearch(live, p); !ok {
			gone = append(gone, p)
		}
	}
	n.setView(live)
	n.log.Info("cluster changed", "nodes", live, "gone", gone)
	if n.hub != nil {
		n.hub.Rehome(gone)
	}
}

func (n *Node) setView(v []string) { n.view.Store(&v) }

// owner ranks every live node for key and returns the first, "" if it is
// this node (rendezvous hashing).
func (n *Node) owner(kind byte, key string) string {
	view := *n.view.Load()
	best, bestScore := "", uint64(0)
	for _, node := range view {
		if s := score(kind, key, node); best == "" || s > bestScore {
			best, bestScore = node, s
		}
	}
	if best == n.name {
		return ""
	}
	return best
}

// score is FNV-1a over kind, key and node, finished with a 64-bit mixer
// so that close names spread well.
func score(kind byte, key, node string) uint64 {
	h := uint64(14695981039346656037)
	h = (h ^ uint64(kind)) * 1099511628211
	for i := 0; i < len(key); i++ {
		h = (h ^ uint64(key[i])) * 1099511628211
	}
	h = (h ^ 0xFF) * 1099511628211
	for i := 0; i < len(node); i++ {
		h = (h ^ uint64(node[i])) * 1099511628211
	}
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return h
}

// Alive implements room.Cluster.
func (n *Node) Alive(node string) bool {
	_, ok := slices.BinarySearch(*n.view.Load(), node)
	return ok
}

// RoomOwner implements room.Cluster.
func (n *Node) RoomOwner(name string) string { return n.owner('r', name) }

// UserOwner implements room.Cluster.
func (n *Node) UserOwner(name string) string { return n.owner('u', name) }

// Send implements room.Cluster.
func (n *Node) Send(node string, e *room.Envelope) error {
	return n.publish(n.subject("o", node), e)
}

// Deliver implements room.Cluster. A delivery that cannot be sent is lost
// here; the receiving node notices the gap in seqs and asks again.
func (n *Node) Deliver(node string, e *room.Envelope) {
	if err := n.publish(n.subject("n", node), e); err != nil {
		n.dropped.Add(1)
	}
}

func (n *Node) publish(subj string, e *room.Envelope) error {
	if e.Node == "" {
		// A request passed on to the owner keeps its sender, who gets the answer.
		e.Node = n.name
	}
	bp := n.bufs.Get().(*[]byte)
	*bp = appendEnvelope((*bp)[:0], e)
	return n.out.put(subj, bp)
}

// Queries on PREFIX.q.NODE: the first byte says which.
const (
	queryClaim    = 'c'
	queryRegister = 'r'
)

// Register answers.
const (
	registerOK    = 0
	registerTaken = 1
)

// Claim implements room.Cluster: it asks every other live node at once and
// waits for their answers, at most Timeout.
func (n *Node) Claim(name string, failover bool) room.ClaimResult {
	view := *n.view.Load()
	res := make(room.ClaimResult)
	var mu sync.Mutex
	var wg sync.WaitGroup
	ctx, cancel := context.WithTimeout(context.Background(), n.cfg.Timeout)
	defer cancel()
	req := []byte(string(queryClaim) + name + "\x00" + n.name)
	if failover {
		req = append(req, "\x00failover"...)
	}
	for _, peer := range view {
		if peer == n.name {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			m, err := n.nc.RequestWithContext(ctx, n.subject("q", peer), req)
			if err != nil {
				n.log.Warn("claim unanswered", "room", name, "peer", peer, "err", err)
				return
			}
			rep, err := decodeClaimReply(m.Data)
			if err != nil {
				n.log.Warn("bad claim reply", "peer", peer, "err", err)
				return
			}
			mu.Lock()
			res[peer] = rep
			mu.Unlock()
		}()
	}
	wg.Wait()
	return res
}

// Register implements room.Cluster.
func (n *Node) Register(owner, name string, dmSince int64) ([][]byte, error) {
	e := room.Envelope{Node: n.name, Name: name, Since: dmSince}
	req := appendEnvelope([]byte{queryRegister}, &e)
	m, err := n.nc.Request(n.subject("q", owner), req, n.cfg.Timeout)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", room.ErrUnavailable, err)
	}
	if len(m.Data) == 0 {
		return nil, room.ErrUnavailable
	}
	if m.Data[0] == registerTaken {
		return nil, room.ErrNameTaken
	}
	var rep room.Envelope
	if err := decodeEnvelope(m.Data[1:], &rep); err != nil {
		return nil, fmt.Errorf("%w: %v", room.ErrUnavailable, err)
	}
	return rep.Frames, nil
}

// serveQuery answers claims and name registrations.
func (n *Node) serveQuery(m *nats.Msg) {
	if len(m.Data) == 0 {
		return
	}
	switch m.Data[0] {
	case queryClaim:
		roomName, claimant, ok := strings.Cut(string(m.Data[1:]), "\x00")
		if !ok {
			return
		}
		claimant, failover := strings.CutSuffix(claimant, "\x00failover")
		rep := n.hub.Relinquish(roomName, claimant, failover)
		_ = m.Respond(appendClaimReply(nil, &rep))
	case queryRegister:
		var e room.Envelope
		if err := decodeEnvelope(m.Data[1:], &e); err != nil {
			return
		}
		frames, err := n.hub.RegisterRemote(e.Node, e.Name, e.Since)
		if err != nil {
			_ = m.Respond([]byte{registerTaken})
			return
		}
		_ = m.Respond(appendEnvelope([]byte{registerOK}, &room.Envelope{Frames: frames}))
	}
}

// Collectors returns the cluster's Prometheus series.
func (n *Node) Collectors() []prometheus.Collector {
	const ns = "nbchat_cluster"
	return []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: ns, Name: "nodes", Help: "Live nodes in the cluster, this one included.",
		}, func() float64 { return float64(len(*n.view.Load())) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: ns, Name: "sent_total", Help: "Messages sent to other nodes.",
		}, func() float64 { return float64(n.sent.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: ns, Name: "received_total", Help: "Messages received from other nodes.",
		}, func() float64 { return float64(n.received.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: ns, Name: "dropped_total", Help: "Messages NATS dropped or could not send (recovered by resync where possible).",
		}, func() float64 { return float64(n.dropped.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: ns, Name: "connected", Help: "1 while connected to NATS.",
		}, func() float64 {
			if n.nc.IsConnected() {
				return 1
			}
			return 0
		}),
	}
}
