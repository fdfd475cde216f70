package main

import (
	"errors"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/lesismal/nbio"
)

// A storm client's state (client.storm). Its receive state (nextSeq) is
// kept across the drop, so the seq checks run over both connections.
const (
	stormNone     int32 = iota
	stormDropping       // a ping is out: its pong drops the socket
	stormRedial         // dropped on purpose: being dialled again
	stormResuming       // connected again: joining with since
)

// errStormDrop stops Parse: frames after the pong are what the client
// missed and must get again through since.
var errStormDrop = errors.New("loadtest: dropped for the storm")

// stormRetry is the wait after a refusal that gave no Retry-After, and
// after a 409: the client closed its old socket itself, so the name is free
// as soon as the server has seen that close. (A 409's Retry-After is for
// a holder the server must first probe, one whose socket went silent.)
const stormRetry = 100 * time.Millisecond

// isStormer spreads the dropping share evenly over the readers.
func isStormer(cfg *Config, id int) bool {
	if cfg.Scenario != "storm" || cfg.StormFrac <= 0 || isSender(cfg, id) {
		return false
	}
	f := cfg.StormFrac
	return int(float64(id+1)*f) > int(float64(id)*f)
}

// stormState is one process's storm.
type stormState struct {
	q    chan *client  // dropped clients to dial again
	done chan struct{} // closed when the storm is over: no more retries

	dropped, rejoined, attempts, pending atomic.Int64
	start, last                          atomic.Int64 // unix ns: the drop, the latest rejoin

	// With -storm-silent: the old sockets left open, how many the server
	// closed and when it closed the last; ending is set when the storm
	// closes the rest itself.
	silentClosed, silentLast atomic.Int64
	ending                   atomic.Bool

	// Guarded by gen.mu.
	silent  []*silentConn
	refused map[string]int64 // failed attempts by reason
	gaveUp  map[string]int64 // clients never back, by their last failure
	hist    *hdrhistogram.Histogram
}

// stormCounts are a storm's counts, of one process or of the run.
type stormCounts struct {
	Dropped  int64            `json:"dropped"`
	Rejoined int64            `json:"rejoined"`
	Attempts int64            `json:"attempts"`
	Refused  map[string]int64 `json:"refused_attempts"` // by reason: http_503, http_409, timeout...
	GaveUp   map[string]int64 `json:"gave_up"`          // by the last attempt's failure
	Seconds  float64          `json:"seconds_to_last_rejoin"`
	// With -storm-silent: old sockets left open, closed by the server, and
	// the time from the drop to the server's last close.
	Silent        int64   `json:"silent_sockets,omitempty"`
	SilentClosed  int64   `json:"silent_closed_by_server,omitempty"`
	SilentSeconds float64 `json:"seconds_to_last_silent_close,omitempty"`
}

func (c *stormCounts) add(o *stormCounts) {
	c.Dropped += o.Dropped
	c.Rejoined += o.Rejoined
	c.Attempts += o.Attempts
	c.Seconds = max(c.Seconds, o.Seconds)
	c.Silent += o.Silent
	c.SilentClosed += o.SilentClosed
	c.SilentSeconds = max(c.SilentSeconds, o.SilentSeconds)
	addMap(c.Refused, o.Refused)
	addMap(c.GaveUp, o.GaveUp)
}

// stormResult is what a process reports of its storm.
type stormResult struct {
	stormCounts
	Rejoin *histJSON `json:"rejoin,omitempty"` // drop to joined, per client
}

// storm drops this process's storm clients at start+StormAt and dials them
// again as fast as the server lets them back; it returns once every one has
// rejoined (and with -storm-silent the server has closed every old socket)
// or, at the latest, a handshake timeout after the traffic stops.
func (g *gen) storm(start, stop time.Time) {
	cfg, st := g.cfg, &g.st
	time.Sleep(time.Until(start.Add(cfg.StormAt)))
	var victims []*client
	for _, c := range g.clients {
		if c != nil && isStormer(cfg, int(c.id)) && c.joinedOK.Load() && c.open.Load() {
			victims = append(victims, c)
		}
	}
	st.start.Store(time.Now().UnixNano())
	for w := 0; w < cfg.DialWorkers; w++ {
		go func(seed uint64) {
			r := maskRand{s: seed}
			for {
				select {
				case c := <-st.q:
					st.attempts.Add(1)
					g.dial(c, &r)
				case <-st.done:
					return
				}
			}
		}(uint64(time.Now().UnixNano()) + uint64(w)*7919)
	}
	// A ping each: the pong comes back on the poller after everything the
	// server sent before it, and the client drops the socket there, so the
	// last seq it saw is exact.
	var buf [2 + 4 + 5]byte
	for _, c := range victims {
		nc := c.conn.Load()
		c.storm.Store(stormDropping)
		st.dropped.Add(1)
		st.pending.Add(1)
		if _, err := nc.Write(appendMasked(buf[:0], opPing, []byte("storm"), uint32(c.id))); err != nil {
			c.stormLost("write_failed")
		}
	}
	deadline := stop.Add(cfg.HandshakeTimeout)
	for st.pending.Load() > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	close(st.done)
	// With -storm-silent a server that lets a name have several
	// connections lets a reader back beside its old socket, which it has
	// yet to find dead: wait for that too, within the same bound.
	for time.Now().Before(deadline) {
		g.mu.Lock()
		n := int64(len(st.silent))
		g.mu.Unlock()
		if st.silentClosed.Load() >= n {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	st.ending.Store(true)
	g.mu.Lock()
	silent := st.silent
	g.mu.Unlock()
	for _, z := range silent {
		_ = z.nc.Close()
	}
	for { // dropped and queued, never dialled again before the end
		select {
		case c := <-st.q:
			c.stormLost("not_redialled")
		default:
			return
		}
	}
}

// drop is the pong's end of a storm drop, on the poller: what the client
// has seen is final, and Parse closes the socket after this batch.
func (c *client) drop() error {
	if c.nextSeq > 0 {
		c.since = c.nextSeq - 1
	}
	c.nextSeq = c.since + 1
	c.frag = nil
	c.storm.Store(stormRedial)
	return errStormDrop
}

// goSilent is drop's end with -storm-silent: the old socket stays open but
// answers nothing from now on (not even pings), as a peer behind a dead
// network path looks to the server, and c dials again on a new socket.
func (c *client) goSilent() {
	g, nc := c.g, c.conn.Load()
	z := &silentConn{g: g, nc: nc}
	nc.SetSession(z) // later reads go to z
	g.mu.Lock()
	g.st.silent = append(g.st.silent, z)
	g.mu.Unlock()
	if c.open.Swap(false) {
		g.open.Add(-1)
	}
	g.st.q <- c
}

// silentConn is an old socket of a -storm-silent drop: it reads and drops
// everything, so only the server's probe of the name can find it dead.
type silentConn struct {
	g      *gen
	nc     *nbio.Conn
	closed atomic.Bool
}

func (z *silentConn) UnderlayerConn() net.Conn { return z.nc }
func (z *silentConn) Parse([]byte) error       { return nil }

func (z *silentConn) CloseAndClean(error) {
	st := &z.g.st
	if z.closed.Swap(true) || st.ending.Load() {
		return
	}
	st.silentClosed.Add(1)
	st.silentLast.Store(time.Now().UnixNano())
}

// stormRefused schedules another attempt after a failed one; the server's
// Retry-After is obeyed, as a well-behaved client does.
func (g *gen) stormRefused(c *client, reason string, wait time.Duration) {
	st := &g.st
	g.mu.Lock()
	st.refused[reason]++
	g.mu.Unlock()
	time.AfterFunc(wait, func() {
		select {
		case <-st.done:
			c.stormLost(reason)
		default:
			st.q <- c
		}
	})
}

// stormLost counts a dropped client that will not be back.
func (c *client) stormLost(reason string) {
	g := c.g
	if c.storm.Swap(stormNone) == stormNone {
		return
	}
	g.mu.Lock()
	g.st.gaveUp[reason]++
	g.mu.Unlock()
	g.st.pending.Add(-1)
}

// stormRejoined counts a dropped client joined again.
func (c *client) stormRejoined() {
	g, now := c.g, time.Now().UnixNano()
	c.storm.Store(stormNone)
	g.mu.Lock()
	_ = g.st.hist.RecordValue(max((now-g.st.start.Load())/1000, 1))
	g.mu.Unlock()
	g.st.rejoined.Add(1)
	g.st.last.Store(now)
	g.st.pending.Add(-1)
}

// retryAfter is a refusal's Retry-After in seconds, or the default wait.
func (g *gen) retryAfter(res *http.Response) time.Duration {
	if res.StatusCode == http.StatusConflict && !g.cfg.StormSilent {
		return stormRetry
	}
	if s, err := strconv.Atoi(res.Header.Get("Retry-After")); err == nil && s >= 0 && s <= 60 {
		return time.Duration(s) * time.Second
	}
	return stormRetry
}

// sendJoin asks to join the client's room again with since.
func (c *client) sendJoin(b *batch) {
	nc := c.conn.Load()
	if nc == nil {
		return
	}
	p := append([]byte(`{"type":"join","room":"`), c.g.roomName(int(c.room))...)
	p = append(p, `","since":`...)
	p = appendInt(p, c.since)
	p = append(p, '}')
	_, _ = nc.Write(appendMasked(nil, opText, p, uint32(b.now)))
}

func (g *gen) stormResult() *stormResult {
	st := &g.st
	if st.q == nil {
		return nil
	}
	r := &stormResult{stormCounts: stormCounts{Dropped: st.dropped.Load(), Rejoined: st.rejoined.Load(), Attempts: st.attempts.Load()}}
	if last := st.last.Load(); last > 0 {
		r.Seconds = float64(last-st.start.Load()) / 1e9
	}
	if last := st.silentLast.Load(); last > 0 {
		r.SilentSeconds = float64(last-st.start.Load()) / 1e9
	}
	r.SilentClosed = st.silentClosed.Load()
	g.mu.Lock()
	r.Silent = int64(len(st.silent))
	r.Refused, r.GaveUp = st.refused, st.gaveUp
	h := exportHist(st.hist)
	g.mu.Unlock()
	r.Rejoin = &h
	return r
}
