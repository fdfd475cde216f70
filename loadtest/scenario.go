package main

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// rampResult is what a process reports after its connections are up.
type rampResult struct {
	Joined      int64   `json:"joined"`
	Failed      int64   `json:"failed"`
	Members     []int64 `json:"members"` // reading static members per room
	SlowMembers int64   `json:"slow_members"`
	JoinedNode  []int64 `json:"joined_per_node,omitempty"`       // with several -url nodes
	MembersNode []int64 `json:"members_per_room_node,omitempty"` // reading members per (room, node), as recvShard.roomNode
	Seconds     float64 `json:"seconds"`
}

// ramp dials this process's static clients at its share of -rate, through a
// small pool of dialing goroutines, and waits until each one joined or failed
// (bounded by -ramp-timeout plus -handshake-timeout).
func (g *gen) ramp() rampResult {
	cfg, start := g.cfg, time.Now()
	n := g.plan.Hi - g.plan.Lo
	g.clients = make([]*client, n)
	deadline := start.Add(cfg.RampTimeout)
	jobs := make(chan int, 256)
	var wg sync.WaitGroup
	for w := 0; w < cfg.DialWorkers; w++ {
		wg.Add(1)
		go func(seed uint64) {
			defer wg.Done()
			r := maskRand{s: seed}
			for id := range jobs {
				if isSlow(cfg, id) {
					g.dialSlow(id)
					continue
				}
				c := g.clients[id-g.plan.Lo]
				if time.Now().After(deadline) {
					g.resolve(c, false, "ramp_timeout")
					continue
				}
				g.dial(c, &r)
			}
		}(uint64(time.Now().UnixNano()) + uint64(w)*7919)
	}
	for i := range g.clients {
		id := g.plan.Lo + i
		if !isSlow(cfg, id) {
			g.clients[i] = &client{g: g, id: int32(id), room: int32(roomOf(cfg, id)), kind: kindStatic, nextSeq: -1}
		}
	}
	// Pace in 5 ms steps: exact enough, and no timer per connection.
	sent := 0
	for sent < n && time.Now().Before(deadline) {
		want := min(n, int(time.Since(start).Seconds()*g.plan.Rate)+1)
		for ; sent < want; sent++ {
			jobs <- g.plan.Lo + sent
		}
		time.Sleep(5 * time.Millisecond)
	}
	close(jobs)
	wg.Wait()
	for _, c := range g.clients[sent:] {
		if c != nil {
			g.resolve(c, false, "ramp_timeout")
		}
	}
	// Handshakes and joins finish on the pollers; wait for the stragglers.
	limit := time.Now().Add(cfg.HandshakeTimeout)
	for g.joined.Load()+g.failed.Load() < int64(n) && time.Now().Before(limit) {
		time.Sleep(10 * time.Millisecond)
	}
	for _, c := range g.clients {
		if c != nil && !c.resolved.Load() {
			g.resolve(c, false, "join_timeout")
			g.closeClient(c)
		}
	}
	g.drainSlowOnce()
	res := rampResult{Joined: g.joined.Load(), Failed: g.failed.Load(), Seconds: time.Since(start).Seconds()}
	if len(g.joinedNode) > 1 {
		res.JoinedNode = make([]int64, len(g.joinedNode))
		for i := range g.joinedNode {
			res.JoinedNode[i] = g.joinedNode[i].Load()
		}
	}
	res.Members = make([]int64, max(cfg.Rooms, 1))
	if g.roomNodes {
		res.MembersNode = make([]int64, cfg.Rooms*len(g.targets))
	}
	for _, c := range g.clients {
		if c != nil && c.room >= 0 && c.joinedOK.Load() {
			res.Members[c.room]++
			if s := g.roomNodeSlot(c); s > 0 {
				res.MembersNode[s-1]++
			}
		}
	}
	g.mu.Lock()
	res.SlowMembers = int64(len(g.slow))
	g.slowInfo.Connected = int64(len(g.slow))
	g.openRamp = g.open.Load() + int64(len(g.slow))
	g.mu.Unlock()
	g.rssRamp = settledRSS()
	return res
}

// closeClient starts a clean close: a masked close frame; the server echoes
// it and drops the socket.
func (g *gen) closeClient(c *client) {
	nc := c.conn.Load()
	if nc == nil || c.closing.Swap(true) {
		return
	}
	var buf [8]byte
	_, _ = nc.Write(appendMasked(buf[:0], opClose, []byte{0x03, 0xE8}, uint32(time.Now().UnixNano())))
}

// dialSlow connects a client that will not read after the ramp. It uses a
// plain socket (no nbio) so not reading is simply not calling read(2).
func (g *gen) dialSlow(id int) {
	fail := func(reason string) {
		g.failed.Add(1)
		g.mu.Lock()
		g.failures[reason]++
		g.mu.Unlock()
	}
	conn, err := g.slowDialer(id).Dial("tcp", g.target(id).hostPort)
	if err != nil {
		fail(classify(err))
		return
	}
	r, _ := http.NewRequest("GET", g.dialURL(id, roomOf(g.cfg, id)), nil)
	var rnd maskRand
	rnd.s = uint64(time.Now().UnixNano())
	key, _ := wsKey(&rnd)
	req := "GET " + r.URL.RequestURI() + " HTTP/1.1\r\nHost: " + r.URL.Host +
		"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " + key +
		"\r\nSec-WebSocket-Version: 13\r\n\r\n"
	_ = conn.SetDeadline(time.Now().Add(g.cfg.HandshakeTimeout))
	if _, err := io.WriteString(conn, req); err != nil {
		_ = conn.Close()
		fail(classify(err))
		return
	}
	line, err := bufio.NewReaderSize(conn, 512).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "HTTP/1.1 101") {
		_ = conn.Close()
		if err != nil {
			fail(classify(err))
		} else if f := strings.Fields(line); len(f) > 1 {
			fail("http_" + f[1])
		}
		return
	}
	_ = conn.SetDeadline(time.Time{})
	g.joined.Add(1)
	g.joinedNode[nodeOf(id, len(g.joinedNode))].Add(1)
	g.mu.Lock()
	g.slow = append(g.slow, conn)
	g.mu.Unlock()
}

// drainSlowOnce reads what slow clients got during the ramp (welcome,
// joined, presence), so they stop reading exactly at the end of the ramp.
func (g *gen) drainSlowOnce() {
	g.forSlow(func(c net.Conn, buf []byte) {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Millisecond))
		for k := 0; k < 64; k++ {
			if _, err := c.Read(buf); err != nil {
				break
			}
		}
	})
}

// forSlow runs f over the slow sockets with a bounded number of goroutines.
func (g *gen) forSlow(f func(c net.Conn, buf []byte)) {
	g.mu.Lock()
	conns := g.slow
	g.mu.Unlock()
	ch := make(chan net.Conn)
	var wg sync.WaitGroup
	for w := 0; w < 32; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 64<<10)
			for c := range ch {
				f(c, buf)
			}
		}()
	}
	for _, c := range conns {
		ch <- c
	}
	close(ch)
	wg.Wait()
}

// checkSlow finds out which slow clients the server closed: read what is
// queued; EOF or reset means closed, a quiet socket means still open.
func (g *gen) checkSlow() {
	g.forSlow(func(c net.Conn, buf []byte) {
		closed, total := false, int64(0)
		_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		for k := 0; k < 4096; k++ {
			n, err := c.Read(buf)
			total += int64(n)
			if err != nil {
				var ne net.Error
				closed = !(errors.As(err, &ne) && ne.Timeout())
				break
			}
		}
		_ = c.Close()
		g.mu.Lock()
		g.slowInfo.BytesQueued += total
		if closed {
			g.slowInfo.ClosedByServer++
		} else {
			g.slowInfo.StillOpen++
		}
		g.mu.Unlock()
	})
}

// closeAll ends the run for this process: slow sockets are checked, every
// other client sends a close frame, and whatever is still open after
// -close-timeout is closed by force.
func (g *gen) closeAll() {
	g.checkSlow()
	for _, c := range g.clients {
		if c != nil && c.open.Load() {
			g.closeClient(c)
		}
	}
	g.closeChurn()
	limit := time.Now().Add(g.cfg.CloseTimeout)
	for g.open.Load() > 0 && time.Now().Before(limit) {
		time.Sleep(10 * time.Millisecond)
	}
	for _, c := range g.clients {
		if c != nil && c.open.Load() {
			if nc := c.conn.Load(); nc != nil {
				g.forcedCloses.Add(1)
				_ = nc.Close()
			}
		}
	}
	g.closeChurnForce()
}
