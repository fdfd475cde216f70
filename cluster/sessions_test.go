package cluster

import (
	"fmt"
	"testing"
	"time"

	"nbchat/loop"
)

// TestUserOnSeveralNodes: one user on three connections, two on one node
// and one on another, none on the user's owner: each gets the user's
// direct messages once; a reply (an ack, a history page) reaches only the
// connection that asked; the room's others see one member that joins once
// and leaves when the last connection does; a connection past -sessions is
// refused.
func TestUserOnSeveralNodes(t *testing.T) {
	_, url := startNATS(t, 0)
	var nodes []*testNode
	for i := 1; i <= 3; i++ {
		nodes = append(nodes, startNodeTweaked(t, url, fmt.Sprintf("n%d", i), true, func(_ *Config, c *loop.Config) {
			c.Room.Sessions = 3
			c.PingInterval, c.IdleTimeout = time.Hour, 2*time.Hour
		}))
	}
	waitView(t, nodes, 3)
	alice := findName(t, "alice", func(n string) bool { return nodes[0].node.UserOwner(n) == "n3" })
	room := roomOwnedBy(t, nodes[0], "n3")
	bob := connect(t, nodes[2].addr, "bob")
	bob.join(room)
	tab1 := connect(t, nodes[0].addr, alice)
	tab2 := connect(t, nodes[1].addr, alice)
	tab3 := connect(t, nodes[0].addr, alice)
	tabs := []*wsClient{tab1, tab2, tab3}
	for _, c := range tabs {
		if j := c.join(room); j.num("count") != 2 {
			t.Fatalf("%s joined %v, want a room of 2 (alice, bob)", c.name, j)
		}
	}
	// One join for bob to see, not three.
	if m := bob.await("presence", func(m msg) bool { return m.str("name") == alice }); m.str("event") != "join" {
		t.Fatalf("bob got %v, want alice's join", m)
	}
	bob.send(`{"type":"ping","id":"p"}`)
	bob.await("pong", nil)
	if m := bob.take(func(m msg) bool { return m.str("type") == "presence" && m.str("name") == alice }); m != nil {
		t.Fatalf("bob heard alice join again: %v", m)
	}
	if status, _ := dial(t, nodes[1].addr, "name="+alice); status != 409 {
		t.Fatalf("a fourth connection: status %d, want 409", status)
	}

	bob.send(`{"type":"dm","to":%q,"text":"for every tab","id":"d1"}`, alice)
	for _, c := range tabs {
		if m := c.await("dm", nil); m.str("text") != "for every tab" || m.str("from") != "bob" {
			t.Fatalf("%s got %v", c.name, m)
		}
	}
	tab3.send(`{"type":"msg","room":%q,"text":"from tab 3","id":"m1"}`, room)
	for _, c := range append(tabs, bob) {
		if m := c.await("msg", nil); m.str("text") != "from tab 3" || m.str("from") != alice {
			t.Fatalf("%s got %v", c.name, m)
		}
	}
	if a := tab3.await("ack", nil); a.str("ref") != "m1" {
		t.Fatalf("tab 3 got %v", a)
	}
	tab1.send(`{"type":"history","room":%q,"id":"h1"}`, room)
	if h := tab1.await("history", nil); h.str("ref") != "h1" {
		t.Fatalf("tab 1 got %v", h)
	}
	// What the others did not ask for has not come to them: pongs come
	// after it would have.
	for _, c := range tabs {
		c.send(`{"type":"ping","id":"p"}`)
		c.await("pong", nil)
	}
	for _, c := range []*wsClient{tab1, tab2} {
		if m := c.take(func(m msg) bool { return m.str("type") == "ack" }); m != nil {
			t.Fatalf("%s got another connection's ack: %v", c.name, m)
		}
	}
	for _, c := range []*wsClient{tab2, tab3} {
		if m := c.take(func(m msg) bool { return m.str("type") == "history" }); m != nil {
			t.Fatalf("%s got another connection's history page: %v", c.name, m)
		}
	}

	// Connections go; alice stays until the last.
	tab1.send(`{"type":"leave","room":%q}`, room)
	tab1.await("left", nil)
	tab2.close()
	bob.send(`{"type":"msg","room":%q,"text":"still there?"}`, room)
	if m := tab3.await("msg", func(m msg) bool { return m.str("text") == "still there?" }); m.str("from") != "bob" {
		t.Fatalf("tab 3 got %v", m)
	}
	bob.send(`{"type":"members","room":%q,"id":"mm"}`, room)
	if m := bob.await("members", nil); m.num("count") != 2 {
		t.Fatalf("members with one of alice's connections left: %v, want 2", m)
	}
	if m := bob.take(func(m msg) bool { return m.str("type") == "presence" && m.str("name") == alice }); m != nil {
		t.Fatalf("bob heard %v while alice was still in the room", m)
	}
	tab3.close()
	if m := bob.await("presence", func(m msg) bool { return m.str("name") == alice }); m.str("event") != "leave" {
		t.Fatalf("bob got %v, want alice's leave", m)
	}
	// The name has room for new connections again.
	dialUntil(t, nodes[1].addr, "name="+alice, 5*time.Second, "alice refused after her connections closed")
}
