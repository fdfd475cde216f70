package e2e

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestDeadNetworkPath: the path between a page and the server dies without
// either end seeing a FIN or an error, as when a phone changes networks or
// a NAT forgets the flow: both sockets stay open and nothing gets through.
// The page finds its socket dead by its heartbeat and reconnects on a new
// path. With names exclusive (-sessions 1) the server
// still holds the name for the old socket and answers 409, pings the old
// socket, gets no pong and closes it; the page's next attempt gets the name
// back and every message sent meanwhile, once, in order. When the browser
// reports the network back, the page checks its socket at once.
// (TestLoginTakesOverADeadSession is the same with names shared.)
func TestDeadNetworkPath(t *testing.T) {
	requireSuite(t)
	node := startNode(t, "-data", "", "-name-probe", "1s", "-sessions", "1")
	px := startProxy(t, node.addr)

	name := namer(t)
	room, aliceName, bobName := name("deadpath"), name("alice.d"), name("bob.d")
	alice := newSessionAt(t, "alice", 1280, 800, "http://"+px.addr()+"/")
	bob := newSessionAt(t, "bob", 1280, 800, node.url())
	alice.login(aliceName)
	bob.login(bobName)
	alice.join(room)
	bob.join(room)
	bob.say("one")
	alice.waitTexts("one")
	alice.eval(`window.nbchat.setDeadAfter(3000), true`, nil)
	var conns int
	alice.eval(`window.nbchat.connections()`, &conns)

	px.cut() // every connection through the proxy so far goes silent
	cut := time.Now()
	want := []string{"one"}
	for i := 1; i <= 3; i++ {
		msg := fmt.Sprintf("while the path is dead %d", i)
		bob.say(msg)
		want = append(want, msg)
	}
	bob.waitTexts(want...)
	// Heartbeat (two 5 s ticks at most), a 409 while the server probes the
	// old socket (1 s), backoff: well under the 75 s idle timeout that
	// would otherwise free the name.
	alice.waitJSFor("back online on a new connection", fmt.Sprintf(
		`window.nbchat.state() === 'online' && window.nbchat.connections() > %d && window.nbchat.me() === %q`, conns, aliceName),
		30*time.Second)
	t.Logf("back %v after the cut (heartbeat)", time.Since(cut).Round(100*time.Millisecond))
	alice.waitTexts(want...)
	bob.say("after")
	want = append(want, "after")
	alice.waitTexts(want...)
	alice.assertSeqs(1, 5)
	if n := metric(t, node.addr, `nbchat_closes_total{reason="unresponsive"}`); n != "1" {
		t.Fatalf("server: unresponsive closes = %q, want 1 (the old socket)", n)
	}

	// The path dies again, and the browser then says the network is back
	// (as after a laptop wakes): the page checks its socket at once instead
	// of waiting for the heartbeat, which is now set too long to matter.
	alice.eval(`window.nbchat.setDeadAfter(600000), true`, nil)
	alice.eval(`window.nbchat.connections()`, &conns)
	px.cut()
	cut = time.Now()
	bob.say("second cut")
	want = append(want, "second cut")
	alice.eval(`window.dispatchEvent(new Event('online')), true`, nil)
	alice.waitJSFor("back online after the online event", fmt.Sprintf(
		`window.nbchat.state() === 'online' && window.nbchat.connections() > %d`, conns), 15*time.Second)
	t.Logf("back %v after the cut (online event)", time.Since(cut).Round(100*time.Millisecond))
	alice.waitTexts(want...)
	alice.assertSeqs(1, 6)
	if n := metric(t, node.addr, `nbchat_closes_total{reason="unresponsive"}`); n != "2" {
		t.Fatalf("server: unresponsive closes = %q, want 2", n)
	}
}

// TestLoginTakesOverADeadSession: a user's phone loses its network without
// closing its socket, and the user logs in on another device under the
// same name. The laptop gets in at once, as a second connection of the
// user; the phone's socket, pinged because another connection asked for
// its name, does not answer and is closed.
func TestLoginTakesOverADeadSession(t *testing.T) {
	requireSuite(t)
	node := startNode(t, "-data", "", "-name-probe", "1s")
	px := startProxy(t, node.addr)
	name := namer(t)
	room, user, friend := name("takeover"), name("carol.t"), name("dan.t")
	phone := newSessionAt(t, "phone", 400, 800, "http://"+px.addr()+"/")
	laptop := newSessionAt(t, "laptop", 1280, 800, node.url())
	other := newSessionAt(t, "other", 1280, 800, node.url())
	phone.login(user)
	other.login(friend)
	phone.join(room)
	other.join(room)

	px.cut()
	laptop.login(user)
	laptop.join(room)
	laptop.say("from the laptop")
	other.waitTexts("from the laptop")
	other.waitMembers(user, friend)
	deadline := time.Now().Add(5 * time.Second)
	for metric(t, node.addr, `nbchat_closes_total{reason="unresponsive"}`) != "1" {
		if time.Now().After(deadline) {
			t.Fatal("the phone's dead socket was not closed within 5 s of the laptop's login")
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Its leaving is not the user's: the laptop is still in the room.
	other.say("seen on the laptop")
	laptop.waitTexts("from the laptop", "seen on the laptop")
	other.waitMembers(user, friend)
}

// metric returns one series' value from a server's /metrics ("" if absent).
func metric(t *testing.T, addr, series string) string {
	t.Helper()
	res, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			return v
		}
	}
	return ""
}

// proxy forwards TCP connections to a server; cut makes the connections it
// has so far black holes in both directions while their sockets stay open,
// and new connections go through as before.
type proxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	pairs  []*pair
}

type pair struct {
	client, server net.Conn
	mu             sync.Mutex
	dead           bool
}

func startProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target}
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, pr := range p.pairs {
			pr.client.Close()
			pr.server.Close()
		}
	})
	go p.serve()
	return p
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

func (p *proxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		pr := &pair{client: c, server: s}
		p.mu.Lock()
		p.pairs = append(p.pairs, pr)
		p.mu.Unlock()
		go pr.pipe(c, s)
		go pr.pipe(s, c)
	}
}

// pipe copies src to dst until either closes; once the pair is dead what
// src sends is read and dropped, so neither end sees an error or a FIN.
func (pr *pair) pipe(src, dst net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if err != nil {
			pr.mu.Lock()
			dead := pr.dead
			pr.mu.Unlock()
			if !dead {
				dst.Close()
			}
			return
		}
		pr.mu.Lock()
		dead := pr.dead
		pr.mu.Unlock()
		if !dead {
			if _, err := dst.Write(buf[:n]); err != nil {
				src.Close()
				return
			}
		}
	}
}

func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, pr := range p.pairs {
		pr.mu.Lock()
		pr.dead = true
		pr.mu.Unlock()
	}
}
