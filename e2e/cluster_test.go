package e2e

import (
	"fmt"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	natsserver "github.com/nats-io/nats-server/v2/server"
)

// TestClusterChatAcrossNodes: two pages on two nodes of a cluster chat in
// one room and privately, and see each other in the member list.
func TestClusterChatAcrossNodes(t *testing.T) {
	requireSuite(t)
	ns, err := natsserver.NewServer(&natsserver.Options{Host: "127.0.0.1", Port: natsserver.RANDOM_PORT, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	defer ns.Shutdown()
	if !ns.ReadyForConnections(5 * time.Second) {
		t.Fatal("NATS not ready")
	}
	natsURL := "nats://" + ns.Addr().(*net.TCPAddr).String()
	var nodes []*server
	for i := 1; i <= 2; i++ {
		port, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		n := &server{bin: srv.bin, addr: fmt.Sprintf("127.0.0.1:%d", port),
			logPath: filepath.Join(t.TempDir(), "node.log"),
			args:    []string{"-data", "", "-nats", natsURL, "-node", fmt.Sprintf("e2e-%d", i)}}
		if err := n.start(); err != nil {
			n.dumpLog()
			t.Fatal(err)
		}
		defer n.stop()
		nodes = append(nodes, n)
	}
	const room = "cluster-room"
	alice := newSessionAt(t, "alice", 1280, 800, nodes[0].url())
	bob := newSessionAt(t, "bob", 1280, 800, nodes[1].url())
	alice.login("alice.c")
	bob.login("bob.c")
	alice.join(room)
	bob.join(room)
	alice.waitMembers("alice.c", "bob.c")
	bob.waitMembers("alice.c", "bob.c")

	alice.say("hello from node 1")
	bob.waitTexts("hello from node 1")
	bob.say("hello from node 2")
	for i := 1; i <= 5; i++ {
		alice.say(fmt.Sprintf("message %d", i))
	}
	want := []string{"hello from node 1", "hello from node 2", "message 1", "message 2", "message 3", "message 4", "message 5"}
	alice.waitTexts(want...)
	bob.waitTexts(want...)
	alice.assertSeqs(1, 7)
	bob.assertSeqs(1, 7)

	// A private message crosses nodes too.
	alice.run(chromedp.Click(`#member-list [data-name="bob.c"] button`, chromedp.ByQuery))
	alice.waitJS("dm open", `window.nbchat.active()?.kind === 'dm' && window.nbchat.active()?.name === 'bob.c'`)
	alice.say("psst across nodes")
	bob.waitJS("unread dm", `window.nbchat.unread()['@alice.c'] === 1`)
}
