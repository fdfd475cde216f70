package loop

import (
	"bufio"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// testClient is a WebSocket client over a raw TCP socket, so tests control
// every byte: masking, fragmentation, bad frames.
type testClient struct {
	t    testing.TB
	conn net.Conn
	r    *bufio.Reader
}

// handshake sends an upgrade request for path (with its query) and returns
// the response status and the client, whose socket is ready for frames
// when the status is 101.
func handshake(t testing.TB, addr, path string, header http.Header) (int, *testClient) {
	t.Helper()
	resp, c := handshakeResponse(t, addr, path, header)
	return resp.StatusCode, c
}

// handshakeResponse is handshake giving the whole response.
func handshakeResponse(t testing.TB, addr, path string, header http.Header) (*http.Response, *testClient) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { conn.Close() })
	var key [16]byte
	_, _ = rand.Read(key[:])
	var b strings.Builder
	fmt.Fprintf(&b, "GET %s HTTP/1.1\r\nHost: %s\r\n", path, addr)
	h := http.Header{}
	h.Set("Upgrade", "websocket")
	h.Set("Connection", "Upgrade")
	h.Set("Sec-WebSocket-Version", "13")
	h.Set("Sec-WebSocket-Key", base64.StdEncoding.EncodeToString(key[:]))
	for k, v := range header {
		h[http.CanonicalHeaderKey(k)] = v
	}
	for k, vs := range h {
		for _, v := range vs {
			if v != "" {
				fmt.Fprintf(&b, "%s: %s\r\n", k, v)
			}
		}
	}
	b.WriteString("\r\n")
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, b.String()); err != nil {
		t.Fatalf("write handshake: %v", err)
	}
	r := bufio.NewReader(conn)
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		t.Fatalf("read handshake response: %v", err)
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		want := acceptKey(h.Get("Sec-WebSocket-Key"))
		if got := resp.Header.Get("Sec-WebSocket-Accept"); got != want {
			t.Fatalf("Sec-WebSocket-Accept = %q, want %q", got, want)
		}
	}
	return resp, &testClient{t: t, conn: conn, r: r}
}

// connect opens a WebSocket as name (optionally joining room) and reads
// the welcome (and joined) messages.
func connect(t testing.TB, addr, name, room string) *testClient {
	t.Helper()
	path := "/ws?name=" + name
	if room != "" {
		path += "&room=" + room
	}
	status, c := handshake(t, addr, path, nil)
	if status != http.StatusSwitchingProtocols {
		t.Fatalf("connect %s: status %d", name, status)
	}
	c.expect("welcome")
	if room != "" {
		c.expect("joined")
	}
	return c
}

// writeFrame sends one frame; masked as clients must unless told not to.
func (c *testClient) writeFrame(fin bool, op byte, payload []byte, masked bool) {
	c.t.Helper()
	if _, err := c.conn.Write(clientFrame(fin, op, payload, masked)); err != nil {
		c.t.Fatalf("write frame: %v", err)
	}
}

// clientFrame builds a client-to-server frame.
func clientFrame(fin bool, op byte, payload []byte, masked bool) []byte {
	b0 := op
	if fin {
		b0 |= 0x80
	}
	b := []byte{b0}
	mask := byte(0)
	if masked {
		mask = 0x80
	}
	switch n := len(payload); {
	case n <= 125:
		b = append(b, mask|byte(n))
	case n <= 0xFFFF:
		b = append(b, mask|126, byte(n>>8), byte(n))
	default:
		b = append(b, mask|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	if !masked {
		return append(b, payload...)
	}
	var key [4]byte
	_, _ = rand.Read(key[:])
	b = append(b, key[:]...)
	for i, p := range payload {
		b = append(b, p^key[i%4])
	}
	return b
}

// send sends a text message.
func (c *testClient) send(msg string) {
	c.t.Helper()
	c.writeFrame(true, 0x1, []byte(msg), true)
}

// readFrame reads one server frame; server frames are never masked.
func (c *testClient) readFrame(timeout time.Duration) (fin bool, op byte, payload []byte, err error) {
	_ = c.conn.SetReadDeadline(time.Now().Add(timeout))
	var h [2]byte
	if _, err = io.ReadFull(c.r, h[:]); err != nil {
		return
	}
	if h[1]&0x80 != 0 {
		return false, 0, nil, fmt.Errorf("server frame is masked")
	}
	fin, op = h[0]&0x80 != 0, h[0]&0x0F
	n := uint64(h[1] & 0x7F)
	switch n {
	case 126:
		var e [2]byte
		if _, err = io.ReadFull(c.r, e[:]); err != nil {
			return
		}
		n = uint64(binary.BigEndian.Uint16(e[:]))
	case 127:
		var e [8]byte
		if _, err = io.ReadFull(c.r, e[:]); err != nil {
			return
		}
		n = binary.BigEndian.Uint64(e[:])
	}
	payload = make([]byte, n)
	_, err = io.ReadFull(c.r, payload)
	return
}

// msg is a decoded server message.
type msg map[string]any

func (m msg) str(k string) string { s, _ := m[k].(string); return s }
func (m msg) num(k string) int64  { f, _ := m[k].(float64); return int64(f) }
func (m msg) names(k string) []string {
	var out []string
	l, _ := m[k].([]any)
	for _, v := range l {
		s, _ := v.(string)
		out = append(out, s)
	}
	return out
}

// next reads the next text message, answering nothing and skipping pings.
func (c *testClient) next(timeout time.Duration) (msg, error) {
	for {
		_, op, p, err := c.readFrame(timeout)
		if err != nil {
			return nil, err
		}
		switch op {
		case 0x9, 0xA:
			continue
		case 0x8:
			return nil, &closeFrameError{payload: p}
		case 0x1:
			var m msg
			if err := json.Unmarshal(p, &m); err != nil {
				return nil, fmt.Errorf("bad JSON %q: %v", p, err)
			}
			return m, nil
		default:
			return nil, fmt.Errorf("unexpected opcode %d", op)
		}
	}
}

// expect reads the next message and fails unless its type is typ.
func (c *testClient) expect(typ string) msg {
	c.t.Helper()
	m, err := c.next(5 * time.Second)
	if err != nil {
		c.t.Fatalf("waiting for %s: %v", typ, err)
	}
	if m.str("type") != typ {
		c.t.Fatalf("got %v, want type %s", m, typ)
	}
	return m
}

// await reads until a message of type typ, skipping presence.
func (c *testClient) await(typ string) msg {
	c.t.Helper()
	for {
		m := c.expectAny()
		switch m.str("type") {
		case typ:
			return m
		case "presence":
		default:
			c.t.Fatalf("got %v, want type %s", m, typ)
		}
	}
}

func (c *testClient) expectAny() msg {
	c.t.Helper()
	m, err := c.next(5 * time.Second)
	if err != nil {
		c.t.Fatalf("waiting for a message: %v", err)
	}
	return m
}

// expectNothing fails if a text message arrives within d.
func (c *testClient) expectNothing(d time.Duration) {
	c.t.Helper()
	if m, err := c.next(d); err == nil {
		c.t.Fatalf("unexpected message %v", m)
	}
}

// expectClose reads until a close frame and returns its code.
func (c *testClient) expectClose(timeout time.Duration) int {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		_, op, p, err := c.readFrame(time.Until(deadline))
		if err != nil {
			c.t.Fatalf("waiting for close frame: %v", err)
		}
		if op == 0x8 {
			if len(p) < 2 {
				return CloseNoStatus
			}
			return int(binary.BigEndian.Uint16(p))
		}
	}
	c.t.Fatalf("no close frame within %v", timeout)
	return 0
}

// expectEOF fails unless the server closes the TCP connection within d.
func (c *testClient) expectEOF(d time.Duration) {
	c.t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(d))
	for {
		if _, err := c.r.ReadByte(); err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				c.t.Fatalf("server did not close the socket within %v", d)
			}
			return
		}
	}
}

type closeFrameError struct{ payload []byte }

func (e *closeFrameError) Error() string { return fmt.Sprintf("close frame %x", e.payload) }

// startServer runs a server on a free loopback port for the test.
func startServer(t testing.TB, cfg Config) *Server {
	t.Helper()
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := contextWithTimeout(5 * time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
	})
	return s
}

// acceptKey is the Sec-WebSocket-Accept value a server must send for key.
func acceptKey(key string) string { return string(appendAcceptKey(nil, key)) }
