package cluster

import (
	"bufio"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// wsClient is a minimal WebSocket client for driving nodes over real
// sockets: a reader goroutine decodes every server message into msgs.
type wsClient struct {
	t    testing.TB
	name string
	conn net.Conn
	msgs chan msg
	wmu  sync.Mutex
	// skipped holds what await and collect read past, for later calls.
	skipped []msg
}

// take returns the first skipped message that match accepts, or nil.
func (c *wsClient) take(match func(msg) bool) msg {
	for i, m := range c.skipped {
		if match(m) {
			c.skipped = append(c.skipped[:i], c.skipped[i+1:]...)
			return m
		}
	}
	return nil
}

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

// dial upgrades to addr with the query, returning the HTTP status and,
// on 101, a client whose reader runs.
func dial(t testing.TB, addr, query string) (int, *wsClient) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { conn.Close() })
	var key [16]byte
	_, _ = rand.Read(key[:])
	req := fmt.Sprintf("GET /ws?%s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: %s\r\n\r\n", query, addr, base64.StdEncoding.EncodeToString(key[:]))
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatalf("write handshake: %v", err)
	}
	r := bufio.NewReader(conn)
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		t.Fatalf("read handshake: %v", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		return resp.StatusCode, nil
	}
	_ = conn.SetDeadline(time.Time{})
	c := &wsClient{t: t, conn: conn, msgs: make(chan msg, 10000)}
	go c.read(r)
	return resp.StatusCode, c
}

// connect opens a connection as name and waits for its welcome.
func connect(t testing.TB, addr, name string) *wsClient {
	t.Helper()
	status, c := dial(t, addr, "name="+name)
	if status != http.StatusSwitchingProtocols {
		t.Fatalf("connect %s to %s: status %d", name, addr, status)
	}
	c.name = name
	c.await("welcome", nil)
	return c
}

// dialUntil dials addr with query until the upgrade goes through, failing
// the test with what as the reason if it has not within d, and returns the
// client and its welcome.
func dialUntil(t testing.TB, addr, query string, d time.Duration, what string) (*wsClient, msg) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		status, c := dial(t, addr, query)
		if status == http.StatusSwitchingProtocols {
			return c, c.await("welcome", nil)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: status %d", what, status)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (c *wsClient) read(r *bufio.Reader) {
	defer close(c.msgs)
	for {
		var h [2]byte
		if _, err := io.ReadFull(r, h[:]); err != nil {
			return
		}
		n := uint64(h[1] & 0x7F)
		switch n {
		case 126:
			var e [2]byte
			if _, err := io.ReadFull(r, e[:]); err != nil {
				return
			}
			n = uint64(binary.BigEndian.Uint16(e[:]))
		case 127:
			var e [8]byte
			if _, err := io.ReadFull(r, e[:]); err != nil {
				return
			}
			n = binary.BigEndian.Uint64(e[:])
		}
		p := make([]byte, n)
		if _, err := io.ReadFull(r, p); err != nil {
			return
		}
		switch h[0] & 0x0F {
		case 0x1:
			var m msg
			if json.Unmarshal(p, &m) == nil {
				c.msgs <- m
			}
		case 0x8:
			return
		}
	}
}

// send writes a masked text frame.
func (c *wsClient) send(format string, args ...any) {
	c.t.Helper()
	c.write(textFrame([]byte(fmt.Sprintf(format, args...))))
}

// textFrame is a masked text frame carrying payload.
func textFrame(payload []byte) []byte {
	b := []byte{0x81}
	switch n := len(payload); {
	case n <= 125:
		b = append(b, 0x80|byte(n))
	default:
		b = append(b, 0x80|126, byte(n>>8), byte(n))
	}
	var key [4]byte
	_, _ = rand.Read(key[:])
	b = append(b, key[:]...)
	for i, p := range payload {
		b = append(b, p^key[i%4])
	}
	return b
}

// write sends raw bytes, frames already built.
func (c *wsClient) write(b []byte) {
	c.t.Helper()
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if _, err := c.conn.Write(b); err != nil {
		c.t.Errorf("%s: write: %v", c.name, err)
	}
}

// await returns the next message of type typ for which match (if not nil)
// is true, skipping others; it fails after 10 seconds.
func (c *wsClient) await(typ string, match func(msg) bool) msg {
	c.t.Helper()
	want := func(m msg) bool { return m.str("type") == typ && (match == nil || match(m)) }
	if m := c.take(want); m != nil {
		return m
	}
	deadline := time.After(10 * time.Second)
	for {
		select {
		case m, ok := <-c.msgs:
			if !ok {
				c.t.Fatalf("%s: connection closed waiting for %s", c.name, typ)
			}
			if want(m) {
				return m
			}
			c.skipped = append(c.skipped, m)
		case <-deadline:
			c.t.Fatalf("%s: no %s within 10s", c.name, typ)
		}
	}
}

// collect gathers the room messages with text starting with prefix until
// it has n of them or d passes, skipping everything else.
func (c *wsClient) collect(room, prefix string, n int, d time.Duration) []msg {
	var out []msg
	want := func(m msg) bool {
		return m.str("type") == "msg" && m.str("room") == room && strings.HasPrefix(m.str("text"), prefix)
	}
	for len(out) < n {
		m := c.take(want)
		if m == nil {
			break
		}
		out = append(out, m)
	}
	deadline := time.After(d)
	for len(out) < n {
		select {
		case m, ok := <-c.msgs:
			if !ok {
				return out
			}
			switch {
			case want(m):
				out = append(out, m)
			case m.str("type") == "error":
				c.t.Logf("%s: error %v", c.name, m)
			default:
				c.skipped = append(c.skipped, m)
			}
		case <-deadline:
			return out
		}
	}
	return out
}

func (c *wsClient) close() { c.conn.Close() }
