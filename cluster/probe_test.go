package cluster

import (
	"net/http"
	"testing"
	"time"

	"nbchat/loop"
)

// TestNameProbeAcrossNodes: a name's holder that went silent without
// closing is probed wherever it is connected, and a connection asking for
// the name on another node gets it after Retry-After. The test clients
// never answer pings, so they stand for peers behind a dead network path.
func TestNameProbeAcrossNodes(t *testing.T) {
	_, url := startNATS(t, 0)
	var nodes []*testNode
	for _, name := range []string{"n1", "n2", "n3"} {
		nodes = append(nodes, startNodeTweaked(t, url, name, false, func(_ *Config, c *loop.Config) {
			c.NameProbe = time.Second
			c.PingInterval, c.IdleTimeout = time.Hour, 2*time.Hour
			c.Room.Sessions = 1
		}))
	}
	waitView(t, nodes, 3)
	owned := func(n string) bool { return nodes[0].node.UserOwner(n) == "n3" }
	// One holder on the name's owner node, one on a third node (the owner
	// forwards the probe there).
	for _, holderNode := range []*testNode{nodes[2], nodes[1]} {
		name := findName(t, "ann"+holderNode.name+"x", owned)
		old := connect(t, holderNode.addr, name)
		if status, _ := dial(t, nodes[0].addr, "name="+name); status != http.StatusConflict {
			t.Fatalf("%s on n1 while held on %s: status %d, want 409", name, holderNode.name, status)
		}
		asked := time.Now()
		for open := true; open; {
			select {
			case _, open = <-old.msgs:
			case <-time.After(4 * time.Second):
				t.Fatalf("%s: the silent holder on %s was not closed", name, holderNode.name)
			}
		}
		if d := time.Since(asked); d > 3*time.Second {
			t.Fatalf("%s: holder closed %v after the request, want within Retry-After (2s)", name, d)
		}
		// The owner frees the name once the holder's node tells it.
		deadline := time.Now().Add(3 * time.Second)
		for {
			status, c := dial(t, nodes[0].addr, "name="+name)
			if status == http.StatusSwitchingProtocols {
				c.name = name
				c.await("welcome", nil)
				break
			}
			if status != http.StatusConflict || time.Now().After(deadline) {
				t.Fatalf("%s on n1 after the holder closed: status %d", name, status)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}
