package loop

import (
	"bytes"
	"net"
	"net/netip"
	"runtime/debug"
	"time"

	"github.com/lesismal/nbio"
	"github.com/lesismal/nbio/nbhttp"
)

// onClose is nbhttp's OnClose hook: a plain connection gives back its
// place under MaxLoad (register took it).
func (s *Server) onClose(c net.Conn, _ error) {
	if nbc, ok := c.(*nbio.Conn); ok && s.handshakes != nil && nbc.IsTCP() {
		s.plain.Add(-1)
		s.handshakes.take(nbc)
	}
}

// onData is nbio's data handler: where fastUpgrade is used, it may take a
// connection's first read, and a first read it does not take gets nbhttp's
// parser; the rest goes to the connection's own handler (nbhttp's parser,
// then the WebSocket conn's Parse).
func (s *Server) onData(nbc *nbio.Conn, data []byte) {
	handoffSeen(nbc)
	s.yields[nbc.Hash()%len(s.yields)].maybe()
	if s.handshakes != nil && s.handshakes.take(nbc) {
		if s.tryFastUpgrade(nbc, data) {
			return
		}
		if nbc.Session() == nil {
			s.parseHTTP(nbc)
		}
	}
	nbc.DataHandler()(nbc, data)
}

// parseHTTP gives a plain connection the parser nbhttp's own registration
// would have (register leaves it out until a read needs it).
func (s *Server) parseHTTP(nbc *nbio.Conn) {
	hc := &nbhttp.Conn{Conn: nbc}
	hc.Parser = nbhttp.NewParser(hc, s.engine, nbhttp.NewServerProcessor(), false, nbc.Execute)
	nbc.SetSession(hc.Parser)
	// The handshake queue only waits for a first read: a request it starts
	// must be complete within the timeout too (nbhttp renews the deadline
	// after each response, for keep-alive).
	_ = nbc.SetReadDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
}

// tryFastUpgrade is fastUpgrade on the poller, which no panic may stop: a
// panic closes this connection alone.
func (s *Server) tryFastUpgrade(nbc *nbio.Conn, data []byte) (took bool) {
	defer func() {
		if v := recover(); v != nil {
			s.log.Error("panic upgrading a connection; closing it", "panic", v, "stack", string(debug.Stack()))
			_ = nbc.Close()
			took = true
		}
	}()
	return s.fastUpgrade(nbc, data)
}

// fastUpgrade upgrades a connection straight from its first read when
// that read is one plain, complete upgrade request that the server will
// accept. It saves what nbhttp spends on an upgrade (an http.Request with
// its header map, a response, a hop to another goroutine): 34
// allocations per handshake. Everything else, and every request it would
// refuse, goes on to nbhttp and serveWS, which answer as before; it
// reports whether it took the connection.
//
// It runs on the poller, so it leaves to nbhttp's handler goroutines the
// names owned by another node of a cluster, which are registered over
// NATS.
func (s *Server) fastUpgrade(nbc *nbio.Conn, data []byte) bool {
	if nbc.Session() != nil {
		return false
	}
	var h upgradeHead
	if !h.parse(data) || !h.valid() || !s.originAllowed(string(h.origin), string(h.host)) {
		return false
	}
	var ip netip.Addr
	if s.cfg.MaxConnsPerIP > 0 {
		if ta, ok := nbc.RemoteAddr().(*net.TCPAddr); ok {
			ip = limitKey(ta.AddrPort().Addr())
		}
	}
	deflate := s.cfg.Compress && h.extensions != nil && offersDeflate([]string{string(h.extensions)})
	a, no := s.admit(query(h.query), ip, deflate, false)
	if no.status != 0 {
		return false
	}
	s.m.fastUpgrades.Add(1)
	s.open(a, nbc, nbc, string(h.key))
	return true
}

// upgradeHead is what fastUpgrade reads of a request. The byte slices point
// into the read buffer, valid only while the read is handled.
type upgradeHead struct {
	query                                   []byte
	host, connection, upgrade, version, key []byte
	origin, extensions                      []byte
}

// parse reads a GET of /ws over HTTP/1.1 that is exactly data, headers
// and all. Anything it does not read as plain (another target or method,
// a body, a header given twice, folded lines, bytes after the head) makes
// it report false, and nbhttp reads the request instead.
func (h *upgradeHead) parse(data []byte) bool {
	head, ok := bytes.CutSuffix(data, []byte("\r\n\r\n"))
	if !ok {
		return false
	}
	line, rest, _ := bytes.Cut(head, []byte("\r\n"))
	target, ok := bytes.CutPrefix(line, []byte("GET "))
	if !ok {
		return false
	}
	if target, ok = bytes.CutSuffix(target, []byte(" HTTP/1.1")); !ok || !plainTarget(target) {
		return false
	}
	path, query, _ := bytes.Cut(target, []byte("?"))
	if string(path) != "/ws" {
		return false
	}
	h.query = query
	var lower [32]byte
	for len(rest) > 0 {
		line, rest, _ = bytes.Cut(rest, []byte("\r\n"))
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok || !isToken(name) {
			return false
		}
		if value = bytes.Trim(value, " \t"); value == nil {
			value = []byte{} // empty but present: a second one is a duplicate
		}
		if !plainValue(value) {
			return false
		}
		var field *[]byte
		switch string(lowerName(&lower, name)) {
		case "host":
			field = &h.host
		case "connection":
			field = &h.connection
		case "upgrade":
			field = &h.upgrade
		case "sec-websocket-version":
			field = &h.version
		case "sec-websocket-key":
			field = &h.key
		case "origin":
			field = &h.origin
		case "sec-websocket-extensions":
			field = &h.extensions
		case "content-length", "transfer-encoding":
			return false
		default:
			continue
		}
		if *field != nil {
			return false
		}
		*field = value
	}
	return h.host != nil
}

// valid reports whether the head passes the checks serveWS makes of an
// upgrade's headers (headersProblem), Origin apart.
func (h *upgradeHead) valid() bool {
	return headersProblem(hasToken(string(h.connection), "upgrade"), hasToken(string(h.upgrade), "websocket"),
		string(h.version), string(h.key)).status == 0
}

// plainTarget reports whether a request target is printable ASCII without
// a fragment.
func plainTarget(b []byte) bool {
	for _, c := range b {
		if c <= ' ' || c >= 0x7f || c == '#' {
			return false
		}
	}
	return len(b) > 0
}

// plainValue reports whether a header value has no control characters
// but tabs.
func plainValue(b []byte) bool {
	for _, c := range b {
		if (c < ' ' && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

// isToken reports whether b is an HTTP token (RFC 9110 section 5.6.2), as
// header names must be.
func isToken(b []byte) bool {
	for _, c := range b {
		if c <= ' ' || c >= 0x7f || bytes.IndexByte([]byte(`"(),/:;<=>?@[\]{}`), c) >= 0 {
			return false
		}
	}
	return len(b) > 0
}

// lowerName returns name in lower case, in buf; a name longer than buf,
// which no header fastUpgrade reads has, comes back empty.
func lowerName(buf *[32]byte, name []byte) []byte {
	if len(name) > len(buf) {
		return nil
	}
	for i, c := range name {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		buf[i] = c
	}
	return buf[:len(name)]
}
