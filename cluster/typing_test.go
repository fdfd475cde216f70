package cluster

import "testing"

// TestTypingAcrossNodes: a typing notice in a room owned by a third node
// reaches a member on another node, not the typist; one to a user owned by
// a third node reaches that user's node.
func TestTypingAcrossNodes(t *testing.T) {
	_, url := startNATS(t, 0)
	nodes := startNodes(t, url, 3)
	room := roomOwnedBy(t, nodes[0], "n3")
	bobName := findName(t, "bob", func(n string) bool { return nodes[0].node.UserOwner(n) == "n3" })
	alice := connect(t, nodes[0].addr, "alice")
	bob := connect(t, nodes[1].addr, bobName)
	alice.join(room)
	bob.join(room)

	alice.send(`{"type":"typing","room":%q}`, room)
	if m := bob.await("typing", nil); m.str("room") != room || m.str("from") != "alice" {
		t.Fatalf("bob got %v", m)
	}
	alice.send(`{"type":"typing","to":%q}`, bobName)
	if m := bob.await("typing", func(m msg) bool { return m.str("room") == "" }); m.str("from") != "alice" || m.str("to") != bobName {
		t.Fatalf("bob got %v", m)
	}
	bob.send(`{"type":"typing","room":%q}`, room)
	if m := alice.await("typing", nil); m.str("from") != bobName {
		t.Fatalf("alice got %v", m)
	}
	// Nothing came back to the typists: a ping's pong comes after it would.
	for _, c := range []*wsClient{alice, bob} {
		c.send(`{"type":"ping","id":"p"}`)
		c.await("pong", nil)
		if m := c.take(func(m msg) bool { return m.str("type") == "typing" && m.str("from") == c.name }); m != nil {
			t.Fatalf("%s got its own typing notice: %v", c.name, m)
		}
	}
}
