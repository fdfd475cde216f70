package e2e

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// TestDeadNetworkPath: the path between a page and the server dies without
// either end seeing a FIN or an error, as when a phone changes networks or
// a NAT forgets the flow: both sockets stay open and nothing gets through.
// The page finds its socket dead by its heartbeat and reconnects on a new
// path; the server still holds the name for the old socket and answers 409,
// pings the old socket, gets no pong and closes it; the page's next attempt
// gets the name back and every message sent meanwhile, once, in order. When
// the browser reports the network back, the page checks its socket at once.
func TestDeadNetworkPath(t *testing.T) {
	requireSuite(t)
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	node := &server{bin: srv.bin, addr: fmt.Sprintf("127.0.0.1:%d", port),
		logPath: filepath.Join(t.TempDir(), "server.log"),
		args:    []string{"-data", "", "-name-probe", "1s"}}
	if err := node.start(); err != nil {
		node.dumpLog()
		t.Fatal(err)
	}
	defer node.stop()
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
// same name. The first attempt is refused (the phone's socket holds the
// name), the server finds the phone's socket dead, and the page's second
// attempt gets in, without the user doing anything more.
func TestLoginTakesOverADeadSession(t *testing.T) {
	requireSuite(t)
	px := startProxy(t, srv.addr)
	name := namer(t)
	room, user, friend := name("takeover"), name("carol.t"), name("dan.t")
	phone := newSessionAt(t, "phone", 400, 800, "http://"+px.addr()+"/")
	laptop := newSession(t, "laptop", 1280, 800)
	other := newSession(t, "other", 1280, 800)
	phone.login(user)
	other.login(friend)
	phone.join(room)
	other.join(room)

	px.cut()
	start := time.Now()
	laptop.run(chromedp.SetValue(`#name-input`, user, chromedp.ByID), chromedp.Click(`#login-button`, chromedp.ByID))
	laptop.waitJS("name in use message", `document.getElementById('login-error').textContent.includes('name is in use')`)
	laptop.waitJSFor("logged in after the retry", fmt.Sprintf(
		`window.nbchat.state() === 'online' && window.nbchat.me() === %q && document.getElementById('login').hidden`, user), 20*time.Second)
	t.Logf("logged in %v after the first attempt", time.Since(start).Round(100*time.Millisecond))
	laptop.join(room)
	laptop.say("from the laptop")
	other.waitTexts("from the laptop")
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
