package loop

import (
	"crypto/sha1" //nolint:gosec // RFC 6455 section 4.2.2 prescribes SHA-1
	"encoding/base64"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/lesismal/llib/std/crypto/tls"
	"github.com/lesismal/nbio"
	"github.com/lesismal/nbio/nbhttp"

	"nbchat/protocol"
	"nbchat/room"
)

// keyGUID is the fixed string of RFC 6455 section 1.3.
const keyGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// retryAfter is what a client turned away for load is told to wait.
const retryAfter = "5"

// serveWS upgrades a request to a WebSocket connection, after checking
// everything that can refuse it with an HTTP status rather than a close.
// Most upgrades never get here: fastUpgrade takes them straight off the
// socket, and leaves to nbhttp and this handler the ones it would refuse
// or does not read as plain.
func (s *Server) serveWS(w http.ResponseWriter, r *http.Request) {
	// A refused upgrade closes the socket once the answer is written, so
	// refused clients (a flood past -max-conns, say) cannot hold file
	// descriptors; nbhttp closes after responding when the request says so.
	// An accepted upgrade hijacks the connection and is not affected.
	r.Close = true
	if no := s.checkHandshake(r); no.status != 0 {
		s.refuse(w, no)
		return
	}
	var ip netip.Addr
	if s.cfg.MaxConnsPerIP > 0 {
		ip = addrOf(r.RemoteAddr)
	}
	deflate := s.cfg.Compress && offersDeflate(r.Header.Values("Sec-WebSocket-Extensions"))
	a, no := s.admit(query(r.URL.RawQuery), ip, deflate, true)
	if no.status != 0 {
		s.refuse(w, no)
		return
	}
	nbc, hc, err := takeOver(w)
	if err != nil {
		s.perIP.release(ip)
		s.hub.Unregister(a.user, a.c)
		s.refuse(w, refusal{status: http.StatusInternalServerError, msg: "upgrade failed"})
		return
	}
	s.open(a, nbc, hc, r.Header.Get("Sec-WebSocket-Key"))
}

// refusal is an upgrade turned away: the status, the message for the body
// and, when the status calls for one, a header to send with them.
type refusal struct {
	status        int
	msg           string
	header, value string
}

// retryLater is a refusal for load, which a client may retry after
// Retry-After seconds.
func retryLater(status int, msg string) refusal {
	return refusal{status: status, msg: msg, header: "Retry-After", value: retryAfter}
}

// nameTaken is the refusal for a name another connection holds. With
// NameProbe on, that connection has been asked to answer a ping, and it is
// closed if it does not: Retry-After says when to ask again (the janitor
// checks once a second, hence the extra second).
func (s *Server) nameTaken() refusal {
	no := refusal{status: http.StatusConflict, msg: "name taken"}
	if s.cfg.NameProbe > 0 {
		no.header = "Retry-After"
		no.value = strconv.Itoa(int((s.cfg.NameProbe+time.Second-1)/time.Second) + 1)
	}
	return no
}

// admitted is an upgrade that passed admit: its connection, registered
// under its name, and what to do once it is open.
type admitted struct {
	c        *conn
	user     *room.User
	roomName string
	dmSince  int64
}

// notHere is the refusal admit gives, when it may not wait, for a name
// whose registration would wait for another node; it is never sent.
var notHere = refusal{status: -1}

// admit applies the query's parameters, the token and the limits to an
// upgrade whose headers are valid, and registers the name. It changes
// nothing when it refuses. Unless mayWait, it refuses with notHere a name
// owned by another node of the cluster, which is registered over NATS.
func (s *Server) admit(q query, ip netip.Addr, deflate, mayWait bool) (admitted, refusal) {
	name, roomName := q.Get("name"), q.Get("room")
	dmSince := parseSince(q)
	var allowedRooms []string
	if len(s.cfg.AuthSecret) > 0 {
		var no refusal
		if name, allowedRooms, no = s.authenticate(q); no.status != 0 {
			return admitted{}, no
		}
	}
	switch {
	case !protocol.ValidName(name):
		return admitted{}, refusal{status: http.StatusBadRequest, msg: "name must be 1-32 letters, digits, '_', '-' or '.'"}
	case q.Has("room") && !protocol.ValidName(roomName):
		return admitted{}, refusal{status: http.StatusBadRequest, msg: "room must be 1-32 letters, digits, '_', '-' or '.'"}
	case dmSince < -1:
		return admitted{}, refusal{status: http.StatusBadRequest, msg: "dm_since must be a non-negative integer"}
	case s.shutting.Load():
		return admitted{}, retryLater(http.StatusServiceUnavailable, "server shutting down")
	case s.conns.count.Load() >= int64(s.cfg.MaxConns):
		return admitted{}, retryLater(http.StatusServiceUnavailable, "server full")
	case !mayWait && s.cfg.Room.Cluster != nil && s.cfg.Room.Cluster.UserOwner(name) != "":
		return admitted{}, notHere
	case !s.rate.allow(time.Now().UnixNano()):
		return admitted{}, refusal{status: http.StatusServiceUnavailable, msg: "too many connections at once; retry later",
			header: "Retry-After", value: retryAfterSpread()}
	case !s.perIP.acquire(ip, s.cfg.MaxConnsPerIP):
		s.rate.refund() // only upgrades that go through count toward the rate
		return admitted{}, retryLater(http.StatusTooManyRequests, "too many connections from your address")
	}

	c := &conn{srv: s, fl: s.pickFlusher(), ip: ip, dirty: true}
	if allowedRooms != nil {
		rooms := allowedRooms // only then does a slice header go to the heap
		c.allowed = &rooms
	}
	c.dec.maxMessage = int32(s.cfg.MaxMessage)
	if deflate {
		c.deflate, c.dec.allowRSV1 = true, true
	}
	user, err := s.hub.Connect(name, c, dmSince)
	if err != nil {
		s.perIP.release(ip)
		s.rate.refund()
		if errors.Is(err, room.ErrNameTaken) {
			return admitted{}, s.nameTaken()
		}
		return admitted{}, retryLater(http.StatusServiceUnavailable, "cluster unavailable")
	}
	c.user = user
	return admitted{c: c, user: user, roomName: roomName, dmSince: dmSince}, refusal{}
}

// open finishes an admitted upgrade on its socket: nbc is the socket, hc
// what to write through (see takeOver), key the client's
// Sec-WebSocket-Key. The 101, the welcome and the joined reply leave in
// one write.
func (s *Server) open(a admitted, nbc *nbio.Conn, hc net.Conn, key string) {
	c, user := a.c, a.user
	c.nbc, c.hc = nbc, hc
	c.upgraded = s.tick.Load()
	c.lastRead.Store(c.upgraded)
	s.conns.add(c)

	// Hold hmu until the first frames are queued, so a request the client
	// pipelines right behind the handshake is handled after them.
	c.hmu.Lock()
	defer c.hmu.Unlock()
	nbc.SetSession(c)
	_ = nbc.SetReadDeadline(time.Time{}) // nbhttp's, for upgrades that went through it
	// The connection starts corked (dirty, with no flusher scheduled): the
	// welcome and the joined reply queue up and leave in the same write as
	// the 101, one system call per handshake instead of two.
	if err := user.Attach(c, a.dmSince); err != nil {
		c.replyError(nil, err)
	}
	if a.roomName != "" {
		c.join([]byte(a.roomName), nil, -1)
	}
	bp := upgradeBufs.Get().(*[]byte)
	defer upgradeBufs.Put(bp)
	buf := (*bp)[:0]
	buf = append(buf, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "...)
	buf = appendAcceptKey(buf, key)
	buf = append(buf, "\r\n"...)
	if c.deflate {
		buf = append(buf, "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover\r\n"...)
	}
	buf = append(buf, "\r\n"...)
	c.qmu.Lock()
	if !c.sendFin {
		for i, f := range c.queue {
			buf = append(buf, f.Bytes()...)
			f.Release()
			c.queue[i] = nil
		}
		c.queue, c.queued = nil, 0 // an idle connection keeps no queue
	}
	c.qmu.Unlock()
	if cap(buf) <= maxKeptUpgradeBuffer {
		*bp = buf // keep what the queued replies grew it to
	}
	c.unsent.Add(int64(len(buf)))
	// Write copies what the kernel does not take at once, so buf is free
	// again when it returns.
	if _, err := hc.Write(buf); err != nil {
		return // nbio closes the socket; CloseAndClean undoes the rest
	}
	s.m.upgraded.Inc()
	// Uncork: whatever was queued meanwhile goes to the flusher.
	c.qmu.Lock()
	if len(c.queue) > 0 {
		c.fl.add(c)
	} else {
		c.dirty = false
	}
	c.qmu.Unlock()
}

// parseSince reads the dm_since query parameter: -1 when absent, -2 when
// it is not a non-negative integer.
func parseSince(q query) int64 {
	if !q.Has("dm_since") {
		return -1
	}
	n, err := strconv.ParseInt(q.Get("dm_since"), 10, 64)
	if err != nil || n < 0 {
		return -2
	}
	return n
}

// checkHandshake validates an upgrade request (RFC 6455 section 4.2.1)
// and its Origin; it returns the zero refusal or why it refuses it.
func (s *Server) checkHandshake(r *http.Request) refusal {
	if r.Method != http.MethodGet {
		return refusal{status: http.StatusMethodNotAllowed, msg: "WebSocket upgrades use GET", header: "Allow", value: http.MethodGet}
	}
	no := headersProblem(headerHasToken(r.Header, "Connection", "upgrade"), headerHasToken(r.Header, "Upgrade", "websocket"),
		r.Header.Get("Sec-WebSocket-Version"), r.Header.Get("Sec-WebSocket-Key"))
	if no.status == 0 && !s.originAllowed(r.Header.Get("Origin"), r.Host) {
		no = refusal{status: http.StatusForbidden, msg: "origin not allowed"}
	}
	return no
}

// headersProblem applies RFC 6455 section 4.2.1 to a GET's upgrade
// headers, read by nbhttp or by fastUpgrade: whether Connection lists
// upgrade and Upgrade websocket, the version and the key. It returns the
// zero refusal or why it refuses them.
func headersProblem(connectionUpgrade, upgradeWebSocket bool, version, key string) refusal {
	switch {
	case !connectionUpgrade:
		return refusal{status: http.StatusBadRequest, msg: "missing Connection: Upgrade"}
	case !upgradeWebSocket:
		return refusal{status: http.StatusBadRequest, msg: "missing Upgrade: websocket"}
	case version != "13":
		return refusal{status: http.StatusUpgradeRequired, msg: "unsupported WebSocket version; use 13",
			header: "Sec-WebSocket-Version", value: "13"}
	case !validKey(key):
		return refusal{status: http.StatusBadRequest, msg: "bad Sec-WebSocket-Key"}
	}
	return refusal{}
}

func (s *Server) refuse(w http.ResponseWriter, no refusal) {
	s.m.handshakes.WithLabelValues(strconv.Itoa(no.status)).Inc()
	if no.header != "" {
		w.Header().Set(no.header, no.value)
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Connection", "close")
	w.WriteHeader(no.status)
	_, _ = w.Write([]byte(no.msg + "\n"))
}

// originAllowed applies the Origin allowlist to a request for host.
// Browsers always send Origin; a request without one comes from another
// kind of client and is allowed.
func (s *Server) originAllowed(origin, host string) bool {
	if origin == "" {
		return true
	}
	if len(s.cfg.AllowedOrigins) == 0 {
		u, err := url.Parse(origin)
		return err == nil && strings.EqualFold(u.Host, host)
	}
	for _, o := range s.cfg.AllowedOrigins {
		if o == "*" || strings.EqualFold(o, origin) {
			return true
		}
	}
	return false
}

// takeOver hijacks the request's connection from nbhttp's parser, so that
// from now on its bytes come to conn.Parse. It returns the socket and the
// connection to write through: the socket itself, or with TLS the
// nbhttp.Conn around llib's tls.Conn, which encrypts writes and which
// nbhttp's TLS data handler needs back from conn.UnderlayerConn to decrypt
// what it passes to Parse.
func takeOver(w http.ResponseWriter) (*nbio.Conn, net.Conn, error) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		return nil, nil, http.ErrNotSupported
	}
	nc, _, err := hj.Hijack()
	if err != nil {
		return nil, nil, err
	}
	switch v := nc.(type) {
	case *nbhttp.Conn:
		switch inner := v.Conn.(type) {
		case *nbio.Conn:
			v.Parser = nil
			return inner, inner, nil
		case *tls.Conn:
			if nbc, ok := inner.Conn().(*nbio.Conn); ok {
				v.Parser = nil
				return nbc, v, nil
			}
		}
	case *nbio.Conn:
		return v, v, nil
	}
	_ = nc.Close()
	return nil, nil, http.ErrNotSupported
}

// offersDeflate reports whether the client offers permessage-deflate, in
// its Sec-WebSocket-Extensions values, with parameters we can accept (RFC
// 7692): we compress each message on its own with a full window, and ask
// the client to do the same, so an offer that limits our window below 15
// bits is declined.
func offersDeflate(extensions []string) bool {
	for _, v := range extensions {
		for offer := range strings.SplitSeq(v, ",") {
			params := strings.Split(offer, ";")
			if strings.TrimSpace(params[0]) != "permessage-deflate" {
				continue
			}
			ok := true
			for _, p := range params[1:] {
				name, val, _ := strings.Cut(strings.TrimSpace(p), "=")
				switch strings.TrimSpace(name) {
				case "server_no_context_takeover", "client_no_context_takeover", "client_max_window_bits":
				case "server_max_window_bits":
					ok = ok && strings.Trim(strings.TrimSpace(val), `"`) == "15"
				default:
					ok = false
				}
			}
			if ok {
				return true
			}
		}
	}
	return false
}

func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		if hasToken(v, token) {
			return true
		}
	}
	return false
}

// hasToken reports whether the comma-separated list v holds token, in any
// case.
func hasToken(v, token string) bool {
	for v != "" {
		var t string
		t, v, _ = strings.Cut(v, ",")
		if strings.EqualFold(strings.TrimSpace(t), token) {
			return true
		}
	}
	return false
}

// validKey reports whether key is the base64 of 16 bytes.
func validKey(key string) bool {
	if len(key) != 24 {
		return false
	}
	var b [18]byte
	n, err := base64.StdEncoding.Decode(b[:], []byte(key))
	return err == nil && n == 16
}

// upgradeBufs holds the buffers the 101 and first replies are built in.
var upgradeBufs = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// maxKeptUpgradeBuffer bounds the buffer upgradeBufs keeps: a join that
// replays a long history grows it far past a usual handshake.
const maxKeptUpgradeBuffer = 16 << 10

// appendAcceptKey appends the Sec-WebSocket-Accept value for key, which
// validKey has checked is 24 bytes long.
func appendAcceptKey(dst []byte, key string) []byte {
	var in [24 + len(keyGUID)]byte
	n := copy(in[:24], key)
	n += copy(in[n:], keyGUID)
	sum := sha1.Sum(in[:n]) //nolint:gosec // see import
	return base64.StdEncoding.AppendEncode(dst, sum[:])
}
