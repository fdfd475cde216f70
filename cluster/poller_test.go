package cluster

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"nbchat/loop"
)

// stallProxy passes TCP between nodes and a NATS server. Frozen, it stops
// reading what the nodes send, as a link that stopped draining or an
// overloaded NATS server would.
type stallProxy struct {
	ln     net.Listener
	target string
	frozen atomic.Bool
	mu     sync.Mutex
	conns  []net.Conn
}

func newStallProxy(t *testing.T, natsURL string) *stallProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &stallProxy{ln: ln, target: strings.TrimPrefix(natsURL, "nats://")}
	t.Cleanup(p.close)
	go p.serve()
	return p
}

func (p *stallProxy) url() string { return "nats://" + p.ln.Addr().String() }

func (p *stallProxy) serve() {
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
		p.mu.Lock()
		p.conns = append(p.conns, c, s)
		p.mu.Unlock()
		go func() { _, _ = io.Copy(c, s) }()
		go func() {
			buf := make([]byte, 32<<10)
			for {
				if p.frozen.Load() {
					time.Sleep(10 * time.Millisecond)
					continue
				}
				n, err := c.Read(buf)
				if n > 0 {
					if _, werr := s.Write(buf[:n]); werr != nil {
						return
					}
				}
				if err != nil {
					return
				}
			}
		}()
	}
}

func (p *stallProxy) close() {
	p.frozen.Store(false)
	p.ln.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
}

// TestStalledNATSDoesNotStallTheNode: a node whose link to NATS stops
// draining keeps serving its own rooms; without a bound on NATS writes,
// the poller publishing into the full link would hold every connection
// it serves for a minute.
func TestStalledNATSDoesNotStallTheNode(t *testing.T) {
	_, url := startNATS(t, 0)
	px := newStallProxy(t, url)
	n1 := startNodeTweaked(t, px.url(), "n1", false, func(c *Config, lc *loop.Config) {
		c.WriteTimeout = 300 * time.Millisecond
		lc.Pollers = 1 // alice and bob on the same poller
	})
	n2 := startNode(t, url, "n2")
	waitView(t, []*testNode{n1, n2}, 2)
	remote := findName(t, "room", func(r string) bool { return ownerAmong('r', r, "n1", "n2") == "n2" })
	local := findName(t, "room", func(r string) bool { return ownerAmong('r', r, "n1", "n2") == "n1" })
	alice := connect(t, n1.addr, "alice")
	bob := connect(t, n1.addr, "bob")
	carol := connect(t, n1.addr, "carol")
	alice.join(remote)
	bob.join(local)
	carol.join(local)

	px.frozen.Store(true)
	// About 16 MB for n2, more than the link's socket buffers hold. One
	// frame built once keeps the test's own work small.
	frame := textFrame(fmt.Appendf(nil, `{"type":"msg","room":%q,"text":"%s"}`, remote, strings.Repeat("x", 4000)))
	flooded := make(chan struct{})
	go func() {
		defer close(flooded)
		_ = alice.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
		for range 4000 {
			alice.write(frame)
		}
	}()
	select {
	case <-flooded:
	case <-time.After(10 * time.Second):
		t.Fatal("n1 stopped reading alice's messages")
	}
	// While alice goes on sending and nats.go keeps trying to reconnect
	// through the stalled link (dialling and handshaking under its lock, up
	// to its 2 s connect timeout each time), bob's messages in a room of
	// n1's own still go through at once.
	stop, stopped := make(chan struct{}), make(chan struct{})
	defer func() { close(stop); <-stopped }()
	_ = alice.conn.SetWriteDeadline(time.Now().Add(20 * time.Second))
	go func() {
		defer close(stopped)
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
				alice.write(frame)
			}
		}
	}()
	for i := range 10 {
		start := time.Now()
		bob.send(`{"type":"msg","room":%q,"text":"still here %d"}`, local, i)
		carol.await("msg", func(m msg) bool { return m.str("text") == fmt.Sprintf("still here %d", i) })
		if d := time.Since(start); d > time.Second {
			t.Fatalf("message %d in a room of n1's own took %v with NATS stalled", i, d)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestUpgradesOnThePollerOnlyForLocalNames: a node upgrades on its poller
// (without nbhttp) a connection whose name it owns, and leaves to nbhttp's
// handler goroutines one whose name another node owns, since registering
// that name waits for NATS.
func TestUpgradesOnThePollerOnlyForLocalNames(t *testing.T) {
	_, url := startNATS(t, 0)
	nodes := startExclusiveNodes(t, url, 2)
	local := findName(t, "ann", func(u string) bool { return ownerAmong('u', u, "n1", "n2") == "n1" })
	remote := findName(t, "bob", func(u string) bool { return ownerAmong('u', u, "n1", "n2") == "n2" })
	fast := func() float64 {
		t.Helper()
		res, err := http.Get("http://" + nodes[0].addr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		m := regexp.MustCompile(`(?m)^nbchat_upgrades_fast_total (\S+)$`).FindSubmatch(b)
		if m == nil {
			t.Fatal("no nbchat_upgrades_fast_total in /metrics")
		}
		v, _ := strconv.ParseFloat(string(m[1]), 64)
		return v
	}
	before := fast()
	connect(t, nodes[0].addr, local)
	if got := fast() - before; got != 1 {
		t.Fatalf("%s, owned here: %v upgrades on the poller, want 1", local, got)
	}
	c := connect(t, nodes[0].addr, remote)
	if got := fast() - before; got != 1 {
		t.Fatalf("%s, owned by n2: taken on the poller", remote)
	}
	// Both names hold cluster-wide.
	for _, name := range []string{local, remote} {
		if status, _ := dial(t, nodes[1].addr, "name="+name); status != http.StatusConflict {
			t.Fatalf("%s again on n2: status %d, want 409", name, status)
		}
	}
	c.close()
}
