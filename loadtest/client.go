package main

import (
	"bytes"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/lesismal/nbio"
	"github.com/lesismal/nbio/nbhttp"
)

// Client kinds: only static clients count toward expected deliveries.
const (
	kindStatic = iota
	kindChurn
)

// client is one nbio WebSocket connection. It replaces nbhttp's parser after
// the 101 (nbhttp.ParserCloser), so frames are parsed on the poller goroutine
// straight from the read buffer: no goroutine and no copy per connection.
type client struct {
	g    *gen
	id   int32
	room int32 // -1: no room
	kind uint8

	conn     atomic.Pointer[nbio.Conn]
	resolved atomic.Bool // counted once as joined or failed during the ramp
	closing  atomic.Bool // we sent (or are about to send) a close frame
	gotClose atomic.Bool // the server sent a close frame
	open     atomic.Bool
	joinedOK atomic.Bool
	dialNano atomic.Int64
	storm    atomic.Int32 // stormNone etc.
	born     int64        // churn only: creation time, read by the churn loop

	// Receive state, touched only by this connection's poller goroutine.
	nextSeq int64 // next expected room seq; -1 before joined
	// The joined reply's seq: the history replayed after it goes up to
	// there. replayLast is the last replayed seq seen.
	replayTo, replayLast int64
	nextOwn              int64 // next expected n of our own DMs echoed back
	nextPeer             int64 // next expected n of the partner's DMs
	pend                 []byte
	frag                 []byte
	fragOp               byte
	missing              map[int64]struct{} // seqs skipped by a gap, to tell reorder from dup
	// Storm: the last seq seen before the drop, and whether the client
	// rejoined with it (history up to the joined seq is then deliveries).
	since   int64
	resumed bool

	// Send state, touched only by the sending goroutine.
	sentN int64
}

// UnderlayerConn implements nbhttp.ParserCloser.
func (c *client) UnderlayerConn() net.Conn {
	if nc := c.conn.Load(); nc != nil {
		return nc
	}
	return nil
}

// CloseAndClean implements nbhttp.ParserCloser; nbio calls it once per
// connection after the upgrade, whoever closed it.
func (c *client) CloseAndClean(err error) {
	if !c.open.Swap(false) {
		return
	}
	c.g.open.Add(-1)
	if c.kind == kindChurn {
		c.g.churnOpen.Add(-1)
	}
	switch c.storm.Load() {
	case stormRedial:
		c.g.st.q <- c
		return
	case stormResuming:
		// Closed before its joined reply came, so nothing of the room was
		// seen on it: a client tries again, as after a refusal, and the
		// report counts it among them. (Seen once in CI, 1 in 2,874
		// attempts, at once after the 101 with EOF on both ends: the mark
		// of nbio applying a just-closed socket's hang-up to a new socket
		// that took its fd number, which this generator, an nbio client,
		// does not guard against; the server does, see loop/reuse.go.)
		c.storm.Store(stormRedial)
		c.g.stormRefused(c, "closed_before_joined", stormRetry)
		return
	case stormDropping:
		c.stormLost("server_close") // and counted as a drop below
	}
	if c.closing.Load() {
		if c.gotClose.Load() {
			c.g.cleanCloses.Add(1)
		}
		return
	}
	if !c.resolved.Load() {
		c.g.resolve(c, false, "closed_before_join")
		return
	}
	reason := "server_close"
	if !c.gotClose.Load() {
		reason = classify(err)
	}
	c.g.addDrop(c.kind, reason)
	if c.kind == kindStatic {
		age := time.Duration(time.Now().UnixNano() - c.dialNano.Load())
		c.g.note("drop: %s closed by the server (%s) %.1fs after connecting", c.name(), reason, age.Seconds())
	}
}

// Parse implements nbhttp.ParserCloser: it gets every byte read after the
// 101 response, in order, on the connection's poller goroutine.
func (c *client) Parse(data []byte) error {
	var b batch
	b.sh = c.g.recvShard(c.id)
	b.slot = c.g.roomNodeSlot(c)
	b.now = time.Now().UnixNano() // one clock read per read(2), not per frame
	if len(c.pend) > 0 {
		c.pend = append(c.pend, data...)
		data = c.pend
	}
	var err error
	for len(data) > 0 {
		f, n, perr := parseFrame(data)
		if perr != nil {
			err = perr
			break
		}
		if n == 0 {
			break
		}
		if ferr := c.onFrame(f, &b); ferr != nil {
			if ferr == errStormDrop {
				// Closing (or going silent) is the last touch of c: the
				// redial may run on another poller as soon as it is done.
				c.pend = nil
				b.sh.flush(&b)
				if c.g.cfg.StormSilent {
					c.goSilent()
					return nil
				}
				_ = c.conn.Load().Close()
				return ferr
			}
			err = ferr
			break
		}
		data = data[n:]
	}
	switch {
	case err != nil || len(data) == 0:
		c.pend = nil // idle connections keep no buffer
	case len(c.pend) > 0:
		c.pend = c.pend[:copy(c.pend, data)]
	default:
		c.pend = append(make([]byte, 0, len(data)+512), data...)
	}
	b.sh.flush(&b)
	return err
}

func (c *client) onFrame(f frame, b *batch) error {
	switch f.op {
	case opText, opBin:
		if !f.fin {
			c.frag, c.fragOp = append(c.frag[:0], f.payload...), f.op
			return nil
		}
		c.onMessage(f.payload, b)
	case opCont:
		if c.frag == nil {
			b.ProtoErr++
			return nil
		}
		c.frag = append(c.frag, f.payload...)
		if f.fin {
			c.onMessage(c.frag, b)
			c.frag = nil
		}
	case opPing:
		var buf [2 + 4 + 125]byte
		nc := c.conn.Load()
		if nc != nil && len(f.payload) <= 125 {
			_, _ = nc.Write(appendMasked(buf[:0], opPong, f.payload, uint32(b.now)))
		}
	case opPong:
		if c.storm.Load() == stormDropping {
			return c.drop()
		}
	case opClose:
		// RFC 6455 7.1.1: the server closes TCP first, so TIME_WAIT stays
		// on its side, not on our ports. nbio drops the socket if it does
		// not within 2 s.
		nc := c.conn.Load()
		if nc != nil {
			_ = nc.SetReadDeadline(time.Now().Add(2 * time.Second))
		}
		if c.gotClose.Swap(true) || c.closing.Load() {
			return nil // our close was echoed, or a repeat
		}
		code := 1005
		if len(f.payload) >= 2 {
			code = int(f.payload[0])<<8 | int(f.payload[1])
			// Echo the code, as RFC 6455 5.5.1 asks.
			var buf [2 + 4 + 2]byte
			if nc != nil {
				_, _ = nc.Write(appendMasked(buf[:0], opClose, f.payload[:2], uint32(b.now)))
			}
		}
		c.g.addCloseCode(code)
	}
	return nil
}

// onMessage handles one complete text or binary message.
func (c *client) onMessage(p []byte, b *batch) {
	g := c.g
	if g.cfg.Proto == "raw" {
		// Hub examples (gorilla's chat) join queued messages with '\n'
		// into one frame: each line is a delivery.
		for len(p) > 0 {
			line := p
			if i := bytes.IndexByte(p, '\n'); i >= 0 {
				line, p = p[:i], p[i+1:]
			} else {
				p = nil
			}
			if len(line) > 0 {
				c.delivered(line, b)
			}
		}
		return
	}
	var f fields
	if !scanJSON(p, &f) {
		b.ProtoErr++
		return
	}
	switch string(f.typ) {
	case "msg":
		if int32(roomIndex(f.room)) != c.room || c.room < 0 {
			b.Misrouted++
			return
		}
		if f.hasSeq && f.seq <= c.replayTo && c.resumed {
			// History after a rejoin with since: what the client missed
			// while away, each exactly once (latency would be the outage).
			if f.seq > c.since {
				c.checkSeq(f.seq, true, b)
				b.Deliv++
				b.Recovered++
			}
			return
		}
		if f.hasSeq && f.seq <= c.replayTo {
			// Room history replayed after joined: in order, once, and
			// not a delivery of this run's traffic.
			if f.seq <= c.replayLast {
				c.dup(f.seq, b)
			}
			c.replayLast = f.seq
			b.Replayed++
			return
		}
		c.checkSeq(f.seq, f.hasSeq, b)
		c.delivered(f.text, b)
	case "dm":
		_, sender, n, ok := parseText(f.text)
		switch {
		case !ok:
			b.ProtoErr++
			return
		case sender == int64(c.id):
			c.nextOwn = checkN(c.nextOwn, n, b)
		case sender == int64(c.id^1):
			c.nextPeer = checkN(c.nextPeer, n, b)
		default:
			b.Misrouted++
			return
		}
		c.delivered(f.text, b)
	case "presence":
		b.Presence++
	case "welcome":
		if c.storm.Load() == stormResuming {
			c.sendJoin(b)
			return
		}
		if c.room < 0 {
			g.resolve(c, true, "")
		}
	case "joined":
		if c.storm.Load() == stormResuming {
			c.resumed, c.replayTo = true, c.since
			if f.hasSeq {
				c.replayTo = f.seq
			}
			if !f.recovered {
				b.Unrecovered++
				b.note("storm: %s rejoined with since %d, not recovered", c.name(), c.since)
			}
			c.stormRejoined()
			return
		}
		c.nextSeq, c.replayTo, c.replayLast = -1, 0, 0
		if f.hasSeq {
			c.nextSeq, c.replayTo = f.seq+1, f.seq
		}
		g.resolve(c, true, "")
	case "error":
		g.addServerError(c, string(f.code))
	default:
		b.Other++
	}
}

// delivered counts one delivery and its send-to-receive latency.
func (c *client) delivered(text []byte, b *batch) {
	if c.kind != kindStatic {
		b.ChurnDeliv++
		return
	}
	b.Deliv++
	sent, _, _, ok := parseText(text)
	if !ok {
		b.NoStamp++
		return
	}
	lat := min(max((b.now-sent)/1000, 0), histMax) // clamp: an error would allocate
	b.addLatency(lat)
}

// checkSeq enforces per-room seq: +1 per message, no gaps, no duplicates.
func (c *client) checkSeq(seq int64, has bool, b *batch) {
	switch {
	case !has:
		b.NoSeq++
	case c.nextSeq < 0: // joined carried no seq: trust the first message
		c.nextSeq = seq + 1
	case seq == c.nextSeq:
		c.nextSeq++
	case seq > c.nextSeq:
		b.Gaps += seq - c.nextSeq
		b.note("gap: %s expected seq %d got %d", c.name(), c.nextSeq, seq)
		if c.missing == nil {
			c.missing = make(map[int64]struct{})
		}
		for s := c.nextSeq; s < seq && len(c.missing) < 4096; s++ {
			c.missing[s] = struct{}{}
		}
		c.nextSeq = seq + 1
	default:
		if _, ok := c.missing[seq]; ok {
			delete(c.missing, seq)
			b.Reorders++
			b.Gaps-- // it arrived after all, only late
			b.note("reorder: %s got seq %d after %d", c.name(), seq, c.nextSeq-1)
		} else {
			c.dup(seq, b)
		}
	}
}

// dup counts a room message that arrived twice.
func (c *client) dup(seq int64, b *batch) {
	b.Dups++
	if c.kind != kindStatic {
		b.ChurnDups++
	}
	b.note("duplicate: %s got seq %d again", c.name(), seq)
}

// checkN is checkSeq for DMs, whose order comes from the sender's counter n.
func checkN(next, n int64, b *batch) int64 {
	switch {
	case n == next:
		return next + 1
	case n > next:
		b.Gaps += n - next
		b.note("dm gap: expected n %d got %d", next, n)
		return n + 1
	default:
		b.Dups++
		b.note("dm duplicate or reorder: n %d after %d", n, next-1)
		return next
	}
}

func (c *client) name() string { return c.g.clientName(int(c.id)) }

// wsKey makes a Sec-WebSocket-Key and the Sec-WebSocket-Accept that must
// come back (RFC 6455 4.2.2).
func wsKey(r *maskRand) (key, accept string) {
	var k [16]byte
	for i := 0; i < 16; i += 4 {
		v := r.next()
		k[i], k[i+1], k[i+2], k[i+3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
	}
	key = base64.StdEncoding.EncodeToString(k[:])
	h := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return key, base64.StdEncoding.EncodeToString(h[:])
}

// dialURL is the upgrade URL for a client: its node's -url as given in raw
// mode, with name and room added in chat mode.
func (g *gen) dialURL(id, room int) string {
	t := g.target(id)
	if g.cfg.Proto == "raw" {
		return t.httpURL
	}
	q := url.Values{"name": {g.clientName(id)}}
	if room >= 0 {
		q.Set("room", g.roomName(room))
	}
	sep := "?"
	if t.baseHasQuery {
		sep = "&"
	}
	return t.httpURL + sep + q.Encode()
}

// dial connects c through nbhttp's ClientConn: the TCP connect blocks this
// goroutine (one of a small dial pool), the handshake completes on a poller.
func (g *gen) dial(c *client, r *maskRand) {
	c.dialNano.Store(time.Now().UnixNano())
	room := int(c.room)
	if c.storm.Load() == stormRedial {
		room = -1 // it joins with since after the welcome
	}
	req, err := http.NewRequest("GET", g.dialURL(int(c.id), room), nil)
	if err != nil {
		g.resolve(c, false, "bad_url")
		return
	}
	key, accept := wsKey(r)
	req.Header["Upgrade"] = []string{"websocket"}
	req.Header["Connection"] = []string{"Upgrade"}
	req.Header["Sec-WebSocket-Key"] = []string{key}
	req.Header["Sec-WebSocket-Version"] = []string{"13"}
	cli := &nbhttp.ClientConn{Engine: g.engine, Timeout: g.cfg.HandshakeTimeout, Dial: g.dialer(int(c.id)).Dial}
	cli.Do(req, func(res *http.Response, conn net.Conn, err error) {
		g.onHandshake(c, accept, res, conn, err)
	})
}

func (g *gen) onHandshake(c *client, accept string, res *http.Response, conn net.Conn, err error) {
	redial := c.storm.Load() == stormRedial
	switch {
	case !redial:
	case err != nil:
		g.stormRefused(c, classify(err), stormRetry)
		return
	case res.StatusCode != http.StatusSwitchingProtocols:
		g.stormRefused(c, "http_"+strconv.Itoa(res.StatusCode), g.retryAfter(res))
		_ = conn.Close()
		return
	}
	if err != nil {
		g.resolve(c, false, classify(err))
		return
	}
	if res.StatusCode != http.StatusSwitchingProtocols {
		g.resolve(c, false, "http_"+strconv.Itoa(res.StatusCode))
		_ = conn.Close()
		return
	}
	nbc, ok := conn.(*nbio.Conn)
	p, ok2 := nbc.Session().(*nbhttp.Parser)
	if !ok || !ok2 || res.Header.Get("Sec-WebSocket-Accept") != accept {
		if redial {
			g.stormRefused(c, "bad_handshake", stormRetry)
		} else {
			g.resolve(c, false, "bad_handshake")
		}
		_ = conn.Close()
		return
	}
	// Same swap as nbio's own websocket client (NBIO.md section 7): bytes
	// after the 101 in this read go to p.ParserCloser, later reads to the
	// session.
	c.conn.Store(nbc)
	c.open.Store(true)
	g.open.Add(1)
	if c.kind == kindChurn {
		g.churnOpen.Add(1)
	}
	if redial {
		c.storm.Store(stormResuming) // before the welcome can be parsed
	} else {
		g.recordConnect(time.Now().UnixNano() - c.dialNano.Load())
	}
	p.ParserCloser = c
	nbc.SetSession(c)
	if g.cfg.Proto == "raw" {
		g.resolve(c, true, "")
	}
}

// dialer binds the source address: 127.0.0.2, .3, ... in turn, so more
// than one ephemeral port range (~28k) is available toward one server.
func (g *gen) dialer(id int) *net.Dialer {
	if len(g.dialers) == 0 {
		return &net.Dialer{Timeout: g.cfg.HandshakeTimeout}
	}
	return g.dialers[id%len(g.dialers)]
}

// classify names a connect or disconnect error for the failure table.
func classify(err error) string {
	var ne net.Error
	switch {
	case err == nil:
		return "closed"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "reset"
	case errors.Is(err, syscall.EPIPE):
		return "broken_pipe"
	case errors.Is(err, syscall.EADDRNOTAVAIL), errors.Is(err, syscall.EADDRINUSE):
		return "no_source_port"
	case errors.Is(err, syscall.EMFILE), errors.Is(err, syscall.ENFILE):
		return "too_many_files"
	case errors.Is(err, nbhttp.ErrClientTimeout), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed):
		return "eof"
	case errors.Is(err, errBadFrame), errors.Is(err, errFrameTooBig):
		return "bad_frame"
	}
	return "other"
}
