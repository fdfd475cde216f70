package loop

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/lesismal/nbio"

	"nbchat/protocol"
	"nbchat/room"
)

// conn is one upgraded WebSocket connection. It is nbio's session for the
// socket (nbhttp.ParserCloser) and a room.Member.
type conn struct {
	// Immutable after the upgrade.
	srv  *Server
	nbc  *nbio.Conn
	hc   net.Conn // written through: nbc, or with TLS the conn that encrypts
	fl   *flusher
	ip   netip.Addr // counted in srv.perIP; zero when that limit is off
	user *room.User // holds c's name; set before c is seen by rooms
	// allowed lists the only rooms c may join (its token's rooms claim);
	// nil: any room.
	allowed *[]string
	// deflate: the peer negotiated permessage-deflate (without context
	// takeover), so text frames may be sent and received compressed.
	deflate bool

	// Fields are ordered to pack an idle connection into 320 bytes, so
	// some sit apart from the fields that share their guard.

	// Owned by the janitor: upgraded is the tick of the upgrade, settled
	// records that the handshake read deadline was cleared once more.
	settled bool
	// cleaned is guarded by hmu (below).
	cleaned bool
	// probeAt is the tick at which another connection asked for c's name
	// and c pinged its peer (see Probe); 0: no probe under way, or data
	// arrived since.
	probeAt  atomic.Int32
	upgraded int64

	// lastRead is the janitor tick at which data last arrived; pinged
	// records that a ping went out since then.
	lastRead atomic.Int64
	pinged   atomic.Bool
	// finAfterWrite asks for the write side to be shut once unsent reaches
	// zero: the close frame is out, and the FIN tells the peer no more
	// follows (RFC 6455 section 7.1.1: the server closes TCP first).
	finAfterWrite atomic.Bool
	// unsent counts bytes handed to nbio that the kernel has not taken yet
	// (nbio reports writes through OnWrittenSize).
	unsent atomic.Int64

	// hmu serializes request handling (the poller) with the close path.
	hmu     sync.Mutex
	dec     decoder
	rooms   []*room.Room
	limiter tokenBucket

	// qmu guards the outbound queue and the close state.
	qmu     sync.Mutex
	dirty   bool  // on the flusher's ready list
	closing bool  // a close frame is queued or sent: accept no more frames
	sendFin bool  // the queue ends with the close frame
	queued  int32 // bytes in queue (bounded by MaxPending)
	closeBy int32 // janitor tick after which the socket is closed
	queue   []*protocol.Frame
	// closeLabel says why the connection is closing, for /metrics.
	closeLabel string
}

// Name implements room.Member.
func (c *conn) Name() string { return c.user.Name() }

// Token implements room.Addressed: a live connection's address is unique,
// and a reply for a closed one that reached a new connection at the same
// address would also need its name.
func (c *conn) Token() uint64 { return uint64(uintptr(unsafe.Pointer(c))) }

// Send implements room.Member: it queues f, taking over one reference.
func (c *conn) Send(f *protocol.Frame) {
	if c.deflate {
		// The compressed form is made once per frame and shared by every
		// member that negotiated permessage-deflate.
		if z := f.Deflated(); z != f {
			z.Retain(1)
			f.Release()
			f = z
		}
	}
	n := len(f.Bytes())
	c.qmu.Lock()
	if c.closing {
		c.qmu.Unlock()
		f.Release()
		return
	}
	if int(c.queued)+int(c.unsent.Load())+n > c.srv.cfg.MaxPending {
		c.qmu.Unlock()
		f.Release()
		c.close(reasonSlowConsumer)
		return
	}
	c.enqueueLocked(f, n)
	c.qmu.Unlock()
}

// enqueueLocked appends f and schedules a flush. c.qmu must be held.
func (c *conn) enqueueLocked(f *protocol.Frame, n int) {
	c.queue = append(c.queue, f)
	c.queued += int32(n)
	if !c.dirty {
		c.dirty = true
		// fl.mu nests inside qmu; the flusher never takes qmu under fl.mu.
		c.fl.add(c)
	}
}

// flush writes everything queued in one write. It runs on c's flusher.
func (c *conn) flush(fl *flusher) {
	c.qmu.Lock()
	fl.frames = append(fl.frames[:0], c.queue...)
	clear(c.queue)
	if cap(c.queue) > 64 {
		c.queue = nil // a burst is over; keep idle connections small
	} else {
		c.queue = c.queue[:0]
	}
	c.queued = 0
	c.dirty = false
	fin := c.sendFin
	c.sendFin = false
	c.qmu.Unlock()

	buf := fl.buf[:0]
	for i, f := range fl.frames {
		buf = append(buf, f.Bytes()...)
		f.Release()
		fl.frames[i] = nil
	}
	fl.buf = buf
	if len(buf) > 0 {
		c.unsent.Add(int64(len(buf)))
		if fin {
			c.finAfterWrite.Store(true)
		}
		// nbio copies whatever the kernel does not take, so buf is free
		// again when Write returns.
		if _, err := c.hc.Write(buf); err == nil {
			c.srv.m.bytesOut.Add(uint64(len(buf)))
		}
	}
}

// written is nbio's report that n bytes went to the kernel; it runs with
// the nbio connection locked, so the socket cannot be closed under it.
func (c *conn) written(n int) {
	left := c.unsent.Add(-int64(n))
	if left < 0 {
		// With TLS nbio counts ciphertext, longer than the plaintext flush
		// added: do not let the difference pile up as negative debt.
		c.unsent.CompareAndSwap(left, 0)
	}
	if left <= 0 && c.finAfterWrite.CompareAndSwap(true, false) {
		_ = syscall.Shutdown(c.nbc.Hash(), syscall.SHUT_WR)
	}
}

// close starts a server-side close with the code and reason of why. It is
// safe from any goroutine and does nothing if a close is under way.
func (c *conn) close(why closeReason) {
	c.qmu.Lock()
	if c.closing {
		c.qmu.Unlock()
		return
	}
	c.startCloseLocked(why, why.code)
	c.qmu.Unlock()
}

// startCloseLocked queues the close frame, after which nothing more is
// sent, and sets the deadline for the peer to go. c.qmu must be held.
func (c *conn) startCloseLocked(why closeReason, code int) {
	c.closing = true
	c.closeLabel = why.label
	c.closeBy = int32(c.srv.tick.Load() + int64(c.srv.cfg.CloseGrace/tickInterval) + 1)
	c.sendFin = true
	f := protocol.Close(code, why.reason)
	c.enqueueLocked(f, len(f.Bytes()))
}

// closeNow closes the socket at once, as after the peer answered our close.
func (c *conn) closeNow() { _ = c.nbc.Close() }

// Probe implements room.Prober: another connection asks for c's name. c
// pings its peer, and the janitor closes c if nothing arrives within
// NameProbe, so a dead c does not linger beside the new connection, or,
// where the new one was refused, the client that asks again after the
// 409's Retry-After gets the name. A peer heard from a moment ago is pinged too: a phone drops off
// right after it sent something as often as at any other time.
func (c *conn) Probe() {
	s := c.srv
	// lastRead is 0 until the upgrade is done: a connection being opened
	// is alive, and must not send before its 101.
	if s.cfg.NameProbe <= 0 || c.lastRead.Load() == 0 || !c.probeAt.CompareAndSwap(0, int32(s.tick.Load())) {
		return
	}
	s.m.nameProbes.Inc()
	c.Send(protocol.NewFrame(protocol.OpPing, nil))
}

// abandon closes a connection whose peer is gone: no close handshake, since
// nothing would answer it, and the name is free at once.
func (c *conn) abandon() {
	c.qmu.Lock()
	if !c.closing {
		c.closing, c.closeLabel = true, "unresponsive"
	}
	c.qmu.Unlock()
	c.closeNow()
}

// UnderlayerConn implements nbhttp.ParserCloser.
func (c *conn) UnderlayerConn() net.Conn { return c.hc }

// Parse implements nbhttp.ParserCloser: nbio's poller calls it with each
// chunk read from the socket.
func (c *conn) Parse(data []byte) error {
	c.lastRead.Store(c.srv.tick.Load())
	c.pinged.Store(false)
	if at := c.probeAt.Load(); at != 0 {
		c.probeAt.CompareAndSwap(at, 0) // the peer is there: it keeps its name
	}
	c.hmu.Lock()
	defer c.hmu.Unlock()
	if c.cleaned {
		return nil
	}
	defer c.recoverPanic()
	if err := c.dec.feed(data, c); err != nil {
		why := protocolReason(CloseProtocolError, "protocol error")
		if pe, ok := err.(*ProtocolError); ok {
			why = protocolReason(pe.Code, pe.Reason)
		}
		c.close(why)
	}
	return nil
}

// CloseAndClean implements nbhttp.ParserCloser; nbio calls it once the
// socket is closed. It leaves every room, frees the name and drops queued
// frames.
func (c *conn) CloseAndClean(err error) {
	c.hmu.Lock()
	if c.cleaned {
		c.hmu.Unlock()
		return
	}
	c.cleaned = true
	for i, r := range c.rooms {
		r.Drop(c)
		c.rooms[i] = nil
	}
	c.rooms = nil
	c.dec.release()
	c.hmu.Unlock()

	c.qmu.Lock()
	c.closing = true
	label := c.closeLabel
	for i, f := range c.queue {
		f.Release()
		c.queue[i] = nil
	}
	c.queue, c.queued = nil, 0
	c.qmu.Unlock()

	if label == "" {
		label = reasonFromError(err).label
	}
	c.srv.hub.Unregister(c.user, c)
	c.srv.conns.remove(c)
	c.srv.perIP.release(c.ip)
	c.srv.m.closed(label)
}

var requests = sync.Pool{New: func() any { return new(protocol.Request) }}

// inflateBufs holds buffers for decompressed messages, so connections that
// compress keep none of their own between messages.
var inflateBufs = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// Decoder callbacks; they run under c.hmu inside Parse.

func (c *conn) onMessage(text, compressed bool, payload []byte) {
	if c.isClosing() {
		return
	}
	c.srv.m.messagesIn.Add(1)
	if !text {
		c.replyError(nil, protocol.ErrBinary)
		return
	}
	if compressed {
		bp := inflateBufs.Get().(*[]byte)
		defer inflateBufs.Put(bp)
		var err error
		if *bp, err = protocol.Inflate((*bp)[:0], payload, c.srv.cfg.MaxMessage); err != nil {
			if err == protocol.ErrInflatedTooLarge {
				c.close(protocolReason(CloseTooBig, "message inflates past the limit"))
			} else {
				c.close(protocolReason(CloseInvalidPayload, "bad compressed data"))
			}
			return
		}
		if !utf8.Valid(*bp) {
			c.close(protocolReason(CloseInvalidPayload, "invalid UTF-8"))
			return
		}
		payload = *bp
	}
	if !c.limiter.allow(c.srv.tick.Load(), &c.srv.cfg) {
		c.onRateLimited()
		return
	}
	// Requests are pooled, not kept per connection: an idle connection
	// should cost as little memory as possible.
	r := requests.Get().(*protocol.Request)
	defer requests.Put(r)
	if err := r.Decode(payload, c.srv.cfg.MaxText); err != nil {
		c.replyError(r.ID, err)
		return
	}
	c.handle(r)
}

func (c *conn) onPing(payload []byte) {
	c.Send(protocol.NewFrame(protocol.OpPong, payload))
}

func (c *conn) onPong([]byte) {}

func (c *conn) onClose(code int, reason []byte) {
	c.qmu.Lock()
	if c.closing {
		// The peer answered our close: the handshake is complete.
		c.qmu.Unlock()
		c.closeNow()
		return
	}
	if code == CloseNoStatus {
		code = CloseNormal
	}
	c.startCloseLocked(reasonPeer, code)
	c.qmu.Unlock()
}

func (c *conn) isClosing() bool {
	c.qmu.Lock()
	defer c.qmu.Unlock()
	return c.closing
}

func (c *conn) replyError(ref []byte, e *protocol.Error) {
	c.srv.m.errorFor(e.Code).Inc()
	c.Send(protocol.Err(ref, e))
}

// handle serves one valid request. c.hmu is held.
func (c *conn) handle(r *protocol.Request) {
	if testPanicHook != nil {
		testPanicHook(r)
	}
	switch r.Type {
	case protocol.TypeJoin:
		c.join(r.Room, r.ID, r.Since)
	case protocol.TypeLeave:
		i := c.roomIndex(r.Room)
		if i < 0 {
			c.replyError(r.ID, errNotMember)
			return
		}
		c.rooms[i].Leave(c, r.ID)
		last := len(c.rooms) - 1
		c.rooms[i] = c.rooms[last]
		c.rooms[last] = nil
		c.rooms = c.rooms[:last]
	case protocol.TypeMsg:
		i := c.roomIndex(r.Room)
		if i < 0 {
			c.replyError(r.ID, errNotMember)
			return
		}
		c.publish(c.rooms[i], r)
	case protocol.TypeDM:
		// A resend (after a reconnect, or from another tab) of a message
		// delivered already is acknowledged, not delivered again.
		if c.user.RecallDM(r.To, r.ID) {
			c.Send(protocol.AckDM(r.ID, string(r.To)))
			return
		}
		if err := c.srv.hub.DM(c.user, r.To, r.Text, r.ID); err != nil {
			c.replyError(r.ID, err)
			return
		}
		c.user.RememberDM(r.To, r.ID)
	case protocol.TypeHistory:
		i := c.roomIndex(r.Room)
		if i < 0 {
			c.replyError(r.ID, errNotMember)
			return
		}
		if err := c.rooms[i].History(c, r.Before, r.Limit, r.ID); err != nil {
			c.replyError(r.ID, err)
		}
	case protocol.TypeMembers:
		rm := c.srv.hub.Find(r.Room)
		if rm == nil {
			c.Send(protocol.Members(r.ID, string(r.Room), 0, nil))
			return
		}
		rm.Members(c, r.After, r.Limit, r.ID)
	case protocol.TypeTyping:
		if r.Room == nil {
			c.srv.hub.TypingTo(c.user, r.To)
			return
		}
		i := c.roomIndex(r.Room)
		if i < 0 {
			c.replyError(r.ID, errNotMember)
			return
		}
		if err := c.rooms[i].Typing(c); err != nil {
			c.replyError(r.ID, err)
		}
	case protocol.TypeRooms:
		c.srv.hub.Rooms(c, r.ID)
	case protocol.TypePing:
		c.Send(protocol.Pong(r.ID))
	}
}

var (
	errNotMember   = &protocol.Error{Code: protocol.CodeNotMember, Message: "not a member of that room"}
	errTooManyRoom = &protocol.Error{Code: protocol.CodeTooMany, Message: "in too many rooms"}
	errRateLimited = &protocol.Error{Code: protocol.CodeRateLimited, Message: "too many messages; slow down"}
)

// publish sends a msg request to room. A message with an id is
// acknowledged once stored; one whose id c's user sent to this room lately
// (a resend after a reconnect) is acknowledged again and not sent twice.
func (c *conn) publish(room *room.Room, r *protocol.Request) {
	if seq, dup := c.user.Recall(room.Name(), r.ID); dup {
		c.Send(protocol.Ack(r.ID, room.Name(), seq))
		return
	}
	if _, err := room.Publish(c, r.Text, r.ID); err != nil {
		c.replyError(r.ID, err)
	}
}

// Acked implements room.Acker: the message c sent with id is stored as seq.
func (c *conn) Acked(room string, id []byte, seq uint64) {
	c.user.Remember(room, id, seq)
	c.Send(protocol.Ack(id, room, seq))
}

// join puts c in the room called name, catching it up from since (-1:
// the latest messages). c.hmu is held.
func (c *conn) join(name, ref []byte, since int64) {
	if i := c.roomIndex(name); i >= 0 {
		// Answers joined again (and replays from since), changes nothing.
		if _, err := c.srv.hub.Join(c, name, ref, since); err != nil {
			c.replyError(ref, err)
		}
		return
	}
	if c.allowed != nil && !roomAllowed(*c.allowed, name) {
		c.replyError(ref, errForbidden)
		return
	}
	if len(c.rooms) >= c.srv.cfg.MaxRoomsPerConn {
		c.replyError(ref, errTooManyRoom)
		return
	}
	r, err := c.srv.hub.Join(c, name, ref, since)
	if err != nil {
		c.replyError(ref, err)
		return
	}
	c.rooms = append(c.rooms, r)
}

// roomIndex finds the room called name among c's rooms. c.hmu is held.
func (c *conn) roomIndex(name []byte) int {
	for i, r := range c.rooms {
		if r.Name() == string(name) {
			return i
		}
	}
	return -1
}

// onRateLimited answers a message over the rate limit, and closes a
// connection that keeps flooding.
func (c *conn) onRateLimited() {
	c.srv.m.rateLimited.Inc()
	if c.limiter.strike() > c.srv.cfg.RateStrikes {
		c.close(reasonFlood)
		return
	}
	c.replyError(nil, errRateLimited)
}

// tokenBucket limits a connection's messages per second. It runs on the
// coarse janitor clock, so it costs no clock read per message.
type tokenBucket struct {
	tokens  float32
	last    int32 // tick of the last refill (ticks are 100 ms: 6 years fit)
	strikes int32 // refused messages since the bucket last had room
	started bool
}

func (b *tokenBucket) allow(tick int64, cfg *Config) bool {
	if cfg.RateLimit <= 0 {
		return true
	}
	now := int32(tick)
	if !b.started {
		b.started, b.tokens, b.last = true, float32(cfg.RateBurst), now
	}
	if now > b.last {
		b.tokens += float32(float64(now-b.last) * cfg.RateLimit * tickInterval.Seconds())
		b.tokens = min(b.tokens, float32(cfg.RateBurst))
		b.last = now
	}
	if b.tokens >= 1 {
		b.tokens--
		b.strikes = 0
		return true
	}
	return false
}

func (b *tokenBucket) strike() int { b.strikes++; return int(b.strikes) }

// janitorCheck runs on the janitor each tick: it finishes overdue closes,
// pings quiet peers and closes dead ones.
func (c *conn) janitorCheck(now int64) {
	if !c.settled && now-c.upgraded >= int64(time.Second/tickInterval) {
		// nbhttp arms the handshake deadline of a connection it registers
		// (TLS) after handing the socket to a poller, so under load it can
		// land after the upgrade cleared it and would close a healthy
		// connection later. By now nbhttp is done with the accept: clear
		// it for good. (Plain connections have no deadline until a first
		// read that is not a fast upgrade; see handshakeQueue.)
		c.settled = true
		_ = c.nbc.SetReadDeadline(time.Time{})
	}
	c.qmu.Lock()
	closing, closeBy := c.closing, c.closeBy
	c.qmu.Unlock()
	if closing {
		if closeBy != 0 && now >= int64(closeBy) {
			c.closeNow()
		}
		return
	}
	idle := time.Duration(now-c.lastRead.Load()) * tickInterval
	cfg := &c.srv.cfg
	if at := int64(c.probeAt.Load()); at != 0 && time.Duration(now-at)*tickInterval >= cfg.NameProbe {
		c.abandon() // nothing arrived since the probe's ping (Parse clears probeAt)
		return
	}
	switch {
	case cfg.IdleTimeout > 0 && idle >= cfg.IdleTimeout:
		c.close(reasonIdle)
	case cfg.PingInterval > 0 && idle >= cfg.PingInterval && !c.pinged.Load():
		c.pinged.Store(true)
		c.Send(protocol.NewFrame(protocol.OpPing, nil))
	}
}
