package cluster

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"nbchat/loop"
	"nbchat/store"
)

// startNATS runs a NATS server in the test process on port (0: any) and
// returns it with its URL.
func startNATS(t testing.TB, port int) (*server.Server, string) {
	t.Helper()
	if port == 0 {
		port = server.RANDOM_PORT
	}
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: port, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	if !ns.ReadyForConnections(5 * time.Second) {
		t.Fatal("NATS server not ready")
	}
	t.Cleanup(ns.Shutdown)
	return ns, fmt.Sprintf("nats://%s", ns.Addr().(*net.TCPAddr).String())
}

// testNode is one nbchat node: a cluster membership and a chat server.
type testNode struct {
	name string
	node *Node
	srv  *loop.Server
	addr string
	dead bool
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// startNodes starts n nodes on natsURL and waits until each sees all.
func startNodes(t *testing.T, natsURL string, n int) []*testNode {
	t.Helper()
	return startNodesWith(t, natsURL, n, startNode)
}

// startNodesWith starts nodes n1..nN with start and waits until each sees
// all.
func startNodesWith(t *testing.T, natsURL string, n int, start func(testing.TB, string, string) *testNode) []*testNode {
	t.Helper()
	var nodes []*testNode
	for i := range n {
		nodes = append(nodes, start(t, natsURL, fmt.Sprintf("n%d", i+1)))
	}
	waitView(t, nodes, n)
	return nodes
}

// startExclusiveNodes is startNodes with names exclusive (-sessions 1):
// a name held anywhere in the cluster is refused everywhere.
func startExclusiveNodes(t *testing.T, natsURL string, n int) []*testNode {
	t.Helper()
	return startNodesWith(t, natsURL, n, startExclusiveNode)
}

func startExclusiveNode(t testing.TB, natsURL, name string) *testNode {
	t.Helper()
	return startNodeTweaked(t, natsURL, name, true, func(_ *Config, c *loop.Config) { c.Room.Sessions = 1 })
}

func startNode(t testing.TB, natsURL, name string) *testNode {
	t.Helper()
	return startNodeWith(t, natsURL, name, true)
}

// startNodeWith starts a node, with history on disk if stored.
func startNodeWith(t testing.TB, natsURL, name string, stored bool) *testNode {
	t.Helper()
	return startNodeTweaked(t, natsURL, name, stored, nil)
}

// startNodeTweaked is startNodeWith with tweak, if not nil, applied to the
// node's and the server's configuration.
func startNodeTweaked(t testing.TB, natsURL, name string, stored bool, tweak func(*Config, *loop.Config)) *testNode {
	t.Helper()
	ncfg := Config{URLs: []string{natsURL}, Name: name, Heartbeat: 100 * time.Millisecond,
		DeadAfter: 700 * time.Millisecond, Timeout: time.Second, Logger: quiet}
	cfg := loop.Config{Addr: "127.0.0.1:0", Logger: quiet, RateBurst: -1}
	if tweak != nil {
		tweak(&ncfg, &cfg)
	}
	node, err := New(ncfg)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Collectors = node.Collectors()
	cfg.Room.Cluster = node
	cfg.Room.Logger = quiet
	// History on disk, as nodes run by default: messages are shown and
	// acknowledged only once stored, which claims must wait for.
	if stored {
		st, err := store.Open(t.TempDir(), 1000, quiet)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = st.Close() })
		cfg.Room.Store = st
	}
	cfg.Room.PresenceInterval = 100 * time.Millisecond
	srv, err := loop.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := node.Start(srv.Hub()); err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	tn := &testNode{name: name, node: node, srv: srv, addr: srv.Addr()}
	t.Cleanup(func() { tn.stop() })
	return tn
}

// stop shuts the node down gracefully.
func (tn *testNode) stop() {
	if tn.dead {
		return
	}
	tn.dead = true
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	_ = tn.srv.Shutdown(ctx)
	tn.node.Close()
}

// crash cuts the node off the cluster at once, as a crash would for the
// others (no goodbye, no leaves); its server keeps running until cleanup.
func (tn *testNode) crash() {
	close(tn.node.stop)
	<-tn.node.done
	tn.node.nc.Close()
}

// kill drops the node as a crash would for the others: no goodbye, no
// leaves, its NATS connection just goes.
func (tn *testNode) kill() {
	tn.dead = true
	close(tn.node.stop)
	<-tn.node.done
	tn.node.nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	_ = tn.srv.Shutdown(ctx)
}

// waitView waits until every live node sees n nodes.
func waitView(t *testing.T, nodes []*testNode, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for _, tn := range nodes {
		if tn.dead || tn.node.nc.IsClosed() {
			continue
		}
		for len(tn.node.Nodes()) != n {
			if time.Now().After(deadline) {
				t.Fatalf("%s sees %v, want %d nodes", tn.name, tn.node.Nodes(), n)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// findName returns the first of prefix0, prefix1, ... that ok accepts.
func findName(t testing.TB, prefix string, ok func(string) bool) string {
	t.Helper()
	for i := range 1000 {
		if name := fmt.Sprintf("%s%d", prefix, i); ok(name) {
			return name
		}
	}
	t.Fatalf("no name %s0..%s999 fits", prefix, prefix)
	return ""
}

// roomOwnedBy finds a room name that node owns, as viewer sees it.
func roomOwnedBy(t testing.TB, viewer *testNode, owner string) string {
	return findName(t, "room", func(name string) bool {
		o := viewer.node.RoomOwner(name)
		return o == owner || (o == "" && viewer.name == owner)
	})
}

// join joins room and waits for the joined reply.
func (c *wsClient) join(room string) msg {
	c.t.Helper()
	c.send(`{"type":"join","room":%q,"id":"j-%s"}`, room, room)
	return c.await("joined", func(m msg) bool { return m.str("room") == room })
}

// chat has every client send n messages to room, interleaved, and checks
// that every client gets every message exactly once, in the same order
// with the same seqs, and that each sender's acks name those seqs.
func chat(t *testing.T, room, prefix string, n int, clients ...*wsClient) []msg {
	t.Helper()
	for i := range n {
		for _, c := range clients {
			c.send(`{"type":"msg","room":%q,"text":"%s %s %d","id":"%s-%s-%d"}`, room, prefix, c.name, i, prefix, c.name, i)
		}
	}
	total := n * len(clients)
	var first []msg
	for ci, c := range clients {
		got := c.collect(room, prefix+" ", total, 15*time.Second)
		if len(got) != total {
			t.Fatalf("%s got %d of %d messages", c.name, len(got), total)
		}
		for i := 1; i < len(got); i++ {
			if got[i].num("seq") != got[i-1].num("seq")+1 {
				t.Fatalf("%s: seq %d after %d", c.name, got[i].num("seq"), got[i-1].num("seq"))
			}
		}
		if ci == 0 {
			first = got
			continue
		}
		for i := range got {
			if got[i].num("seq") != first[i].num("seq") || got[i].str("text") != first[i].str("text") {
				t.Fatalf("%s saw seq %d %q where %s saw seq %d %q", c.name, got[i].num("seq"), got[i].str("text"),
					clients[0].name, first[i].num("seq"), first[i].str("text"))
			}
		}
	}
	// The acks arrived before or among the messages; they were skipped by
	// collect, so check order per sender from the texts instead.
	for _, c := range clients {
		last := -1
		for _, m := range first {
			var who string
			var i int
			if _, err := fmt.Sscanf(m.str("text"), prefix+" %s %d", &who, &i); err != nil {
				t.Fatalf("bad text %q", m.str("text"))
			}
			if who == c.name {
				if i != last+1 {
					t.Fatalf("%s's message %d came after its message %d", c.name, i, last)
				}
				last = i
			}
		}
	}
	return first
}

func TestRoomAcrossNodes(t *testing.T) {
	_, url := startNATS(t, 0)
	nodes := startNodes(t, url, 3)
	alice := connect(t, nodes[0].addr, "alice")
	bob := connect(t, nodes[1].addr, "bob")
	carol := connect(t, nodes[2].addr, "carol")
	const room = "lobby"
	alice.join(room)
	bob.join(room)
	j := carol.join(room)
	if j.num("count") != 3 {
		t.Fatalf("carol joined a room of %d, want 3: %v", j.num("count"), j)
	}
	if got := j.names("members"); !slices.Equal(got, []string{"alice", "bob", "carol"}) {
		t.Fatalf("members %v", got)
	}
	// Presence crosses nodes.
	alice.await("presence", func(m msg) bool { return m.str("name") == "carol" && m.str("event") == "join" })
	msgs := chat(t, room, "hello", 20, alice, bob, carol)
	if msgs[0].num("seq") != 1 || msgs[len(msgs)-1].num("seq") != 60 {
		t.Fatalf("seqs %d..%d, want 1..60", msgs[0].num("seq"), msgs[len(msgs)-1].num("seq"))
	}

	// Joining again with since replays and keeps the membership, on
	// whichever node.
	for _, c := range []*wsClient{alice, bob, carol} {
		c.send(`{"type":"join","room":%q,"since":55}`, room)
		if j := c.await("joined", nil); j.m("recovered") != true || j.num("seq") != 60 {
			t.Fatalf("%s: joined again %v", c.name, j)
		}
		if got := c.collect(room, "hello ", 5, 5*time.Second); len(got) != 5 || got[0].num("seq") != 56 {
			t.Fatalf("%s: replay %v", c.name, got)
		}
	}
	chat(t, room, "again", 2, alice, bob, carol)

	// The member list is the whole cluster's, from any node.
	bob.send(`{"type":"members","room":%q,"id":"m1"}`, room)
	m := bob.await("members", nil)
	if got := m.names("members"); !slices.Equal(got, []string{"alice", "bob", "carol"}) || m.num("count") != 3 {
		t.Fatalf("members from bob's node: %v", m)
	}
	// A leave on one node reaches the others.
	carol.send(`{"type":"leave","room":%q}`, room)
	carol.await("left", nil)
	alice.await("presence", func(m msg) bool { return m.str("name") == "carol" && m.str("event") == "leave" })
}

func TestNamesAndDMsAcrossNodes(t *testing.T) {
	_, url := startNATS(t, 0)
	nodes := startExclusiveNodes(t, url, 3)
	// Find a name owned by the third node, so a connection on the first
	// must claim it remotely.
	name := findName(t, "bob", func(n string) bool { return nodes[0].node.UserOwner(n) == "n3" })
	bob := connect(t, nodes[1].addr, name)
	for _, tn := range nodes {
		if status, _ := dial(t, tn.addr, "name="+name); status != 409 {
			t.Fatalf("second %s on %s: status %d, want 409", name, tn.name, status)
		}
	}
	alice := connect(t, nodes[0].addr, "alice")
	for i := range 5 {
		alice.send(`{"type":"dm","to":%q,"text":"psst %d","id":"d%d"}`, name, i, i)
	}
	for i := range 5 {
		m := bob.await("dm", nil)
		if m.str("from") != "alice" || m.str("text") != fmt.Sprintf("psst %d", i) || m.num("seq") != int64(i+1) {
			t.Fatalf("bob got %v", m)
		}
		e := alice.await("dm", nil)
		if e.str("to") != name || e.num("seq") != int64(i+1) {
			t.Fatalf("alice's copy %v", e)
		}
	}
	alice.send(`{"type":"dm","to":"nobody","text":"hi","id":"x"}`)
	if e := alice.await("error", nil); e.str("code") != "no_such_user" || e.str("ref") != "x" {
		t.Fatalf("DM to nobody: %v", e)
	}
	// The name is free again once bob leaves, on any node, and the DMs
	// kept for it are recovered with dm_since.
	bob.close()
	c, w := dialUntil(t, nodes[2].addr, "name="+name+"&dm_since=2", 5*time.Second, "name still taken after its connection closed")
	if w.num("dm_seq") != 5 {
		t.Fatalf("welcome %v, want dm_seq 5", w)
	}
	for i := 3; i <= 5; i++ {
		if m := c.await("dm", nil); m.num("seq") != int64(i) {
			t.Fatalf("recovered %v, want seq %d", m, i)
		}
	}
}

func TestRecoverOnAnotherNode(t *testing.T) {
	_, url := startNATS(t, 0)
	nodes := startNodes(t, url, 3)
	room := roomOwnedBy(t, nodes[0], "n1")
	alice := connect(t, nodes[0].addr, "alice")
	bob := connect(t, nodes[1].addr, "bob")
	alice.join(room)
	bob.join(room)
	seen := chat(t, room, "a", 5, alice, bob)
	last := seen[len(seen)-1].num("seq")
	bob.close()
	for i := range 7 {
		alice.send(`{"type":"msg","room":%q,"text":"missed %d","id":"m%d"}`, room, i, i)
	}
	alice.collect(room, "missed ", 7, 10*time.Second)
	bob2 := connect(t, nodes[2].addr, "bob")
	bob2.send(`{"type":"join","room":%q,"since":%d}`, room, last)
	j := bob2.await("joined", nil)
	if j.str("recovered") != "" || j.m("recovered") != true {
		t.Fatalf("joined %v, want recovered true", j)
	}
	got := bob2.collect(room, "missed ", 7, 10*time.Second)
	if len(got) != 7 || got[0].num("seq") != last+1 {
		t.Fatalf("recovered %d messages from seq %v, want 7 from %d", len(got), got, last+1)
	}
}

func (m msg) m(k string) any { return m[k] }

func TestNodeKilledMidChat(t *testing.T) {
	// Nodes notice a death on their heartbeat ticks, which follow their
	// start times; the node started soonest after the dead one notices
	// first. Either survivor may learn first that n1 owns the room now.
	for _, tc := range []struct {
		name  string
		order []string
	}{
		{"new owner notices first", []string{"n3", "n1", "n2"}},
		{"mirror notices first", []string{"n3", "n2", "n1"}},
	} {
		t.Run(tc.name, func(t *testing.T) { testNodeKilledMidChat(t, tc.order) })
	}
}

func testNodeKilledMidChat(t *testing.T, order []string) {
	_, url := startNATS(t, 0)
	started := map[string]*testNode{}
	for i, name := range order {
		time.Sleep(time.Duration(i) * 20 * time.Millisecond)
		started[name] = startNode(t, url, name)
	}
	nodes := []*testNode{started["n1"], started["n2"], started["n3"]}
	waitView(t, nodes, 3)
	// The room's owner is the node that dies, the worst case; alice's node
	// takes it over.
	room := findName(t, "room", func(r string) bool {
		return ownerAmong('r', r, "n1", "n2", "n3") == "n3" && ownerAmong('r', r, "n1", "n2") == "n1"
	})
	alice := connect(t, nodes[0].addr, "alice")
	bob := connect(t, nodes[1].addr, "bob")
	carol := connect(t, nodes[2].addr, "carol")
	alice.join(room)
	bob.join(room)
	carol.join(room)
	before := chat(t, room, "before", 10, alice, bob, carol)
	nodes[2].crash()
	// Sent after the owner died, before anyone noticed: the messages wait
	// at their nodes, unacknowledged, and go to the new owner.
	for i := range 3 {
		alice.send(`{"type":"msg","room":%q,"text":"limbo alice %d","id":"limbo-%d"}`, room, i, i)
		bob.send(`{"type":"msg","room":%q,"text":"limbo bob %d","id":"limbo-%d"}`, room, i, i)
	}
	waitView(t, nodes, 2)
	// carol leaves the member list within a few seconds, with a leave
	// event, though the node that held the list died with her.
	for _, c := range []*wsClient{alice, bob} {
		c.await("presence", func(m msg) bool { return m.str("name") == "carol" && m.str("event") == "leave" })
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		alice.send(`{"type":"members","room":%q}`, room)
		m := alice.await("members", nil)
		if slices.Equal(m.names("members"), []string{"alice", "bob"}) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("members after carol's node died: %v", m)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The room goes on under a new owner with the seq continuing, the
	// messages sent into the void first, each once.
	var limbo []msg
	for _, c := range []*wsClient{alice, bob} {
		got := c.collect(room, "limbo ", 6, 10*time.Second)
		if len(got) != 6 {
			t.Fatalf("%s got %d of the 6 messages sent while the owner was dead: %v", c.name, len(got), got)
		}
		if limbo == nil {
			limbo = got
		}
		for i := range got {
			if got[i].num("seq") != limbo[i].num("seq") || got[i].str("text") != limbo[i].str("text") {
				t.Fatalf("%s and alice saw the resent messages differently", c.name)
			}
		}
	}
	if limbo[0].num("seq") != before[len(before)-1].num("seq")+1 {
		t.Fatalf("seq went from %d to %d across the failover", before[len(before)-1].num("seq"), limbo[0].num("seq"))
	}
	after := chat(t, room, "after", 10, alice, bob)
	if after[0].num("seq") != limbo[len(limbo)-1].num("seq")+1 {
		t.Fatalf("seq %d after the resent messages ending at %d", after[0].num("seq"), limbo[len(limbo)-1].num("seq"))
	}
}

func TestNATSRestartMidChat(t *testing.T) {
	ns, url := startNATS(t, 0)
	port := ns.Addr().(*net.TCPAddr).Port
	nodes := startNodes(t, url, 3)
	room := roomOwnedBy(t, nodes[0], "n1")
	alice := connect(t, nodes[0].addr, "alice")
	bob := connect(t, nodes[1].addr, "bob")
	carol := connect(t, nodes[2].addr, "carol")
	alice.join(room)
	bob.join(room)
	carol.join(room)
	chat(t, room, "before", 5, alice, bob, carol)

	ns.Shutdown()
	// While NATS is down, the owner's own members chat; the others' sends
	// wait in their nodes' reconnect buffers.
	for i := range 5 {
		alice.send(`{"type":"msg","room":%q,"text":"during alice %d","id":"du-%d"}`, room, i, i)
		bob.send(`{"type":"msg","room":%q,"text":"during bob %d","id":"db-%d"}`, room, i, i)
	}
	time.Sleep(300 * time.Millisecond)
	startNATS(t, port)
	waitView(t, nodes, 3)
	var first []msg
	for _, c := range []*wsClient{alice, bob, carol} {
		got := c.collect(room, "during ", 10, 15*time.Second)
		if len(got) != 10 {
			t.Fatalf("%s got %d of 10 messages sent across the NATS restart: %v", c.name, len(got), got)
		}
		for i := 1; i < len(got); i++ {
			if got[i].num("seq") != got[i-1].num("seq")+1 {
				t.Fatalf("%s: seq %d after %d", c.name, got[i].num("seq"), got[i-1].num("seq"))
			}
		}
		if first == nil {
			first = got
		} else if got[0].num("seq") != first[0].num("seq") {
			t.Fatalf("%s starts at seq %d, alice at %d", c.name, got[0].num("seq"), first[0].num("seq"))
		}
	}
	chat(t, room, "after", 5, alice, bob, carol)
}

// ownerAmong is the owner rendezvous hashing picks for room among nodes.
func ownerAmong(kind byte, key string, nodes ...string) string {
	best, bestScore := "", uint64(0)
	for _, n := range nodes {
		if s := score(kind, key, n); best == "" || s > bestScore {
			best, bestScore = n, s
		}
	}
	return best
}

func TestNodeJoinsMidChat(t *testing.T) {
	_, url := startNATS(t, 0)
	nodes := startExclusiveNodes(t, url, 2)
	// A room the third node will take over when it joins.
	room := findName(t, "room", func(r string) bool { return ownerAmong('r', r, "n1", "n2", "n3") == "n3" })
	// And a user the third node will own.
	dave := findName(t, "dave", func(u string) bool {
		return ownerAmong('u', u, "n1", "n2", "n3") == "n3" && ownerAmong('u', u, "n1", "n2") == "n1"
	})
	alice := connect(t, nodes[0].addr, "alice")
	bob := connect(t, nodes[1].addr, "bob")
	d := connect(t, nodes[0].addr, dave)
	for i := 1; i <= 2; i++ {
		bob.send(`{"type":"dm","to":%q,"text":"before %d"}`, dave, i)
		if m := d.await("dm", nil); m.num("seq") != int64(i) {
			t.Fatalf("%s got %v, want dm seq %d", dave, m, i)
		}
	}
	alice.join(room)
	bob.join(room)
	before := chat(t, room, "before", 5, alice, bob)
	nodes = append(nodes, startExclusiveNode(t, url, "n3"))
	waitView(t, nodes, 3)
	// The name stays taken and DMs still reach its connection.
	deadline := time.Now().Add(5 * time.Second)
	for _, held := nodes[2].srv.Hub().Lookup([]byte(dave)); !held; _, held = nodes[2].srv.Hub().Lookup([]byte(dave)) {
		if time.Now().After(deadline) {
			t.Fatalf("the new owner never learned that %s is connected", dave)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if status, _ := dial(t, nodes[2].addr, "name="+dave); status != 409 {
		t.Fatalf("%s again on the new node: status %d, want 409", dave, status)
	}
	bob.send(`{"type":"dm","to":%q,"text":"still there?"}`, dave)
	// Its direct messages moved with it: the numbering goes on.
	if m := d.await("dm", nil); m.str("from") != "bob" || m.str("text") != "still there?" || m.num("seq") != 3 {
		t.Fatalf("%s got %v", dave, m)
	}
	carol := connect(t, nodes[2].addr, "carol")
	if j := carol.join(room); j.num("count") != 3 || j.num("seq") != before[len(before)-1].num("seq") {
		t.Fatalf("carol joined %v after the takeover, want 3 members at seq %d", j, before[len(before)-1].num("seq"))
	}
	after := chat(t, room, "after", 5, alice, bob, carol)
	if after[0].num("seq") != before[len(before)-1].num("seq")+1 {
		t.Fatalf("seq went from %d to %d when the owner changed", before[len(before)-1].num("seq"), after[0].num("seq"))
	}
}

func TestNodeRestartsUnderSameName(t *testing.T) {
	_, url := startNATS(t, 0)
	nodes := startExclusiveNodes(t, url, 3)
	// A user owned by n1 but connected to n3, which crashes and comes back
	// under the same name before the others notice it was gone.
	zed := findName(t, "zed", func(u string) bool { return nodes[0].node.UserOwner(u) == "" })
	connect(t, nodes[2].addr, zed)
	if status, _ := dial(t, nodes[0].addr, "name="+zed); status != 409 {
		t.Fatalf("%s while connected: status %d, want 409", zed, status)
	}
	nodes[2].kill()
	nodes[2] = startExclusiveNode(t, url, "n3")
	dialUntil(t, nodes[0].addr, "name="+zed, 5*time.Second, zed+" still taken after its node restarted")
}

// TestManyClientsJoinAtOnce: nodes start together, then clients join rooms
// spanning every node in the upgrade request, all at once, and every member
// of every room gets every message, whichever node it is on.
func TestManyClientsJoinAtOnce(t *testing.T) {
	_, url := startNATS(t, 0)
	nodes := make([]*testNode, 3)
	var started sync.WaitGroup
	for i := range nodes {
		started.Add(1)
		go func() {
			defer started.Done()
			nodes[i] = startNode(t, url, fmt.Sprintf("n%d", i+1))
		}()
	}
	started.Wait()
	for _, tn := range nodes {
		if got := tn.node.Nodes(); len(got) != 3 {
			t.Fatalf("%s started serving knowing only %v", tn.name, got)
		}
	}
	const rooms, perRoom = 10, 30
	clients := make([][]*wsClient, rooms)
	var wg sync.WaitGroup
	var mu sync.Mutex
	for r := range rooms {
		for i := range perRoom {
			wg.Add(1)
			go func() {
				defer wg.Done()
				name := fmt.Sprintf("c%d-%d", r, i)
				status, c := dial(t, nodes[(r+i)%3].addr, fmt.Sprintf("name=%s&room=busy%d", name, r))
				if status != 101 {
					t.Errorf("%s: status %d", name, status)
					return
				}
				c.name = name
				mu.Lock()
				clients[r] = append(clients[r], c)
				mu.Unlock()
			}()
		}
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	for r := range rooms {
		for _, c := range clients[r] {
			c.await("joined", nil)
		}
	}
	for r := range rooms {
		room := fmt.Sprintf("busy%d", r)
		for i := range 3 {
			clients[r][0].send(`{"type":"msg","room":%q,"text":"m %d","id":"%d"}`, room, i, i)
		}
	}
	for r := range rooms {
		room := fmt.Sprintf("busy%d", r)
		for _, c := range clients[r] {
			if got := c.collect(room, "m ", 3, 5*time.Second); len(got) != 3 {
				t.Errorf("%s (room %s): got %d of 3 messages", c.name, room, len(got))
			}
		}
	}
}

// leave shuts the node down as SIGTERM does: hand over, then close.
func (tn *testNode) leave() {
	tn.node.Leave()
	tn.stop()
}

// TestGracefulLeaveHandsOver: a node that shuts down hands its rooms and
// users to the others, so nothing it held is lost: a room whose members
// were all on it keeps its history and seq, and a user it owned keeps its
// direct messages and their numbering.
func TestGracefulLeaveHandsOver(t *testing.T) {
	_, url := startNATS(t, 0)
	nodes := startNodes(t, url, 3)
	room := roomOwnedBy(t, nodes[0], "n3")
	erin := findName(t, "erin", func(u string) bool { return nodes[0].node.UserOwner(u) == "n3" })
	carol := connect(t, nodes[2].addr, "carol")
	carol.join(room)
	chat(t, room, "kept", 3, carol)
	e := connect(t, nodes[0].addr, erin)
	bob := connect(t, nodes[1].addr, "bob")
	for i := 1; i <= 2; i++ {
		bob.send(`{"type":"dm","to":%q,"text":"before %d"}`, erin, i)
		if m := e.await("dm", nil); m.num("seq") != int64(i) {
			t.Fatalf("%s got %v, want dm seq %d", erin, m, i)
		}
	}

	nodes[2].leave()
	waitView(t, nodes, 2)

	// The room's history moved: carol, back on another node, recovers it.
	carol2 := connect(t, nodes[0].addr, "carol")
	carol2.send(`{"type":"join","room":%q,"since":0}`, room)
	if j := carol2.await("joined", nil); j.m("recovered") != true || j.num("seq") != 3 {
		t.Fatalf("joined after the owner left: %v, want recovered at seq 3", j)
	}
	if got := carol2.collect(room, "kept ", 3, 5*time.Second); len(got) != 3 {
		t.Fatalf("recovered %d of 3 messages", len(got))
	}
	if after := chat(t, room, "after", 1, carol2); after[0].num("seq") != 4 {
		t.Fatalf("seq after the owner left: %d, want 4", after[0].num("seq"))
	}
	// erin's direct messages moved too: the numbering goes on.
	bob.send(`{"type":"dm","to":%q,"text":"after"}`, erin)
	if m := e.await("dm", nil); m.str("text") != "after" || m.num("seq") != 3 {
		t.Fatalf("%s got %v after its owner left, want dm seq 3", erin, m)
	}
}

// TestRoomsListIsClusterWide: a rooms request on any node lists the rooms
// of the whole cluster, with cluster-wide counts.
func TestRoomsListIsClusterWide(t *testing.T) {
	_, url := startNATS(t, 0)
	nodes := startNodes(t, url, 3)
	want := map[string]int64{}
	for i, tn := range nodes {
		room := roomOwnedBy(t, nodes[0], tn.name)
		// Members on every node, a different number per room.
		for j := range i + 1 {
			c := connect(t, nodes[j].addr, fmt.Sprintf("%s-m%d", room, j))
			c.join(room)
		}
		want[room] = int64(i + 1)
	}
	asker := connect(t, nodes[0].addr, "asker")
	deadline := time.Now().Add(5 * time.Second)
	for {
		asker.send(`{"type":"rooms"}`)
		m := asker.await("rooms", nil)
		got := map[string]int64{}
		list, _ := m["rooms"].([]any)
		for _, v := range list {
			rc, _ := v.(map[string]any)
			name, _ := rc["name"].(string)
			count, _ := rc["count"].(float64)
			got[name] = int64(count)
		}
		if reflect.DeepEqual(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("rooms %v, want %v", got, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestCoalescedPresenceKeepsMirrorsLists fills a big room on its owner in
// a storm, so other nodes hear of the joiners only in coalesced presence,
// then kills the owner: the node that takes the room over must announce
// every one of them leaving, which it can only if its copy of the room
// followed the coalesced lists.
func TestCoalescedPresenceKeepsMirrorsLists(t *testing.T) {
	_, url := startNATS(t, 0)
	small := func(_ *Config, c *loop.Config) { c.Room.PresenceLimit = 3 }
	var nodes []*testNode
	for _, name := range []string{"n1", "n2", "n3"} {
		nodes = append(nodes, startNodeTweaked(t, url, name, false, small))
	}
	waitView(t, nodes, 3)
	room := findName(t, "room", func(r string) bool {
		return ownerAmong('r', r, "n1", "n2", "n3") == "n3" && ownerAmong('r', r, "n1", "n2") == "n1"
	})
	alice := connect(t, nodes[0].addr, "alice")
	alice.join(room)
	var names []string
	for i := range 8 {
		c := connect(t, nodes[2].addr, fmt.Sprintf("storm%d", i))
		c.send(`{"type":"join","room":%q}`, room)
		names = append(names, c.name)
	}
	// presence tells alice whether it names or lists each of names as
	// having done event.
	seen := func(event string) {
		t.Helper()
		left := map[string]bool{}
		for _, n := range names {
			left[n] = true
		}
		list := "joined"
		if event == "leave" {
			list = "left"
		}
		for len(left) > 0 {
			m := alice.await("presence", nil)
			if m.str("event") == event {
				delete(left, m.str("name"))
			}
			for _, n := range m.names(list) {
				delete(left, n)
			}
		}
	}
	seen("join")
	nodes[2].crash()
	waitView(t, nodes, 2)
	seen("leave")
	alice.send(`{"type":"members","room":%q}`, room)
	if m := alice.await("members", nil); !slices.Equal(m.names("members"), []string{"alice"}) || m.num("count") != 1 {
		t.Fatalf("members after the owner died: %v", m)
	}
}
