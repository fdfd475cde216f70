package cluster

import (
	"fmt"
	"testing"
	"time"

	"nbchat/loop"
)

// evicting lets empty stored rooms leave memory at once (every sweep).
func evicting(_ *Config, cfg *loop.Config) {
	cfg.Room.RoomTTL = time.Millisecond
	cfg.Room.SweepInterval = time.Millisecond
}

// startEvictingNodes starts n nodes named n1.. that evict empty rooms.
func startEvictingNodes(t *testing.T, url string, n int) []*testNode {
	t.Helper()
	var nodes []*testNode
	for i := range n {
		nodes = append(nodes, startNodeTweaked(t, url, fmt.Sprintf("n%d", i+1), true, evicting))
	}
	waitView(t, nodes, n)
	return nodes
}

// waitEvicted waits until room is in no node's memory.
func waitEvicted(t *testing.T, room string, nodes ...*testNode) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for _, tn := range nodes {
		for tn.srv.Hub().Find([]byte(room)) != nil {
			if time.Now().After(deadline) {
				t.Fatalf("room %s still in %s's memory", room, tn.name)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// rejoin joins room with since 0 on c and checks that the n messages
// chatted with prefix come back, and that numbering goes on after them.
func rejoin(t *testing.T, c *wsClient, room, prefix string, n int) {
	t.Helper()
	c.send(`{"type":"join","room":%q,"since":0}`, room)
	if j := c.await("joined", nil); j.m("recovered") != true || j.num("seq") != int64(n) {
		t.Fatalf("joined %v, want recovered at seq %d", j, n)
	}
	if got := c.collect(room, prefix+" ", n, 5*time.Second); len(got) != n {
		t.Fatalf("recovered %d of %d messages", len(got), n)
	}
	if after := chat(t, room, "after", 1, c); after[0].num("seq") != int64(n+1) {
		t.Fatalf("seq after the room came back: %d, want %d", after[0].num("seq"), n+1)
	}
}

// TestEvictedRoomHandedOverOnLeave: a room that left its owner's memory
// when it emptied is still handed over when the owner leaves the cluster,
// with its seq and history.
func TestEvictedRoomHandedOverOnLeave(t *testing.T) {
	_, url := startNATS(t, 0)
	nodes := startEvictingNodes(t, url, 3)
	room := roomOwnedBy(t, nodes[0], "n3")
	carol := connect(t, nodes[2].addr, "carol")
	carol.join(room)
	chat(t, room, "kept", 3, carol)
	carol.close()
	waitEvicted(t, room, nodes...)

	nodes[2].leave()
	waitView(t, nodes, 2)
	rejoin(t, connect(t, nodes[0].addr, "carol"), room, "kept", 3)
}

// TestEvictedRoomClaimedByANewNode: a node that joins claims a room whose
// old owner let it leave memory; the old owner answers from its store.
func TestEvictedRoomClaimedByANewNode(t *testing.T) {
	_, url := startNATS(t, 0)
	nodes := startEvictingNodes(t, url, 2)
	room := findName(t, "room", func(r string) bool { return ownerAmong('r', r, "n1", "n2", "n3") == "n3" })
	alice := connect(t, nodes[0].addr, "alice")
	alice.join(room)
	chat(t, room, "kept", 3, alice)
	alice.close()
	waitEvicted(t, room, nodes...)

	nodes = append(nodes, startNodeTweaked(t, url, "n3", true, evicting))
	waitView(t, nodes, 3)
	rejoin(t, connect(t, nodes[2].addr, "carol"), room, "kept", 3)
}
