package loop

import (
	"bufio"
	"bytes"
	"nbchat/room"
	"net/http"
	"strings"
	"testing"
	"time"
)

const plainUpgrade = "GET /ws?name=ann&room=lobby HTTP/1.1\r\nHost: chat.example:8080\r\nUpgrade: websocket\r\n" +
	"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" +
	"Origin: http://chat.example:8080\r\nUser-Agent: test\r\n\r\n"

func TestUpgradeHeadReadsPlainRequests(t *testing.T) {
	var h upgradeHead
	if !h.parse([]byte(plainUpgrade)) || !h.valid() {
		t.Fatal("a plain upgrade is not read")
	}
	for _, f := range []struct{ got, want string }{
		{string(h.query), "name=ann&room=lobby"},
		{string(h.host), "chat.example:8080"},
		{string(h.key), "dGhlIHNhbXBsZSBub25jZQ=="},
		{string(h.origin), "http://chat.example:8080"},
	} {
		if f.got != f.want {
			t.Errorf("read %q, want %q", f.got, f.want)
		}
	}
	// Names in any case, values with spaces around them, Firefox's
	// Connection list, no query.
	other := "GET /ws HTTP/1.1\r\nhost: h\r\nUPGRADE:websocket \r\nconnection: keep-alive, Upgrade\r\n" +
		"sec-websocket-version: 13\r\nsec-websocket-key:\t dGhlIHNhbXBsZSBub25jZQ==\r\n" +
		"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n"
	h = upgradeHead{}
	if !h.parse([]byte(other)) || !h.valid() {
		t.Fatal("an upgrade with other spellings is not read")
	}
	if string(h.extensions) != "permessage-deflate; client_max_window_bits" || h.query != nil {
		t.Errorf("extensions %q, query %q", h.extensions, h.query)
	}
}

// TestUpgradeHeadLeavesTheRestToNbhttp lists requests fastUpgrade must
// not read: nbhttp and serveWS answer them (or refuse them) as before.
func TestUpgradeHeadLeavesTheRestToNbhttp(t *testing.T) {
	for name, req := range notPlain() {
		var h upgradeHead
		if h.parse([]byte(req)) {
			t.Errorf("%s: read as a plain upgrade", name)
		}
	}
	replace := func(old, new string) string { return strings.Replace(plainUpgrade, old, new, 1) }
	for name, req := range map[string]string{
		"no Connection: Upgrade": replace("Connection: Upgrade", "Connection: close"),
		"no Upgrade: websocket":  replace("Upgrade: websocket", "Upgrade: h2c"),
		"version 8":              replace("Version: 13", "Version: 8"),
		"short key":              replace("dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZQ=="),
	} {
		var h upgradeHead
		if h.parse([]byte(req)) && h.valid() {
			t.Errorf("%s: taken as valid", name)
		}
	}
}

// notPlain returns requests, by what is unusual in them, that upgradeHead
// must leave to nbhttp.
func notPlain() map[string]string {
	replace := func(old, new string) string { return strings.Replace(plainUpgrade, old, new, 1) }
	return map[string]string{
		"partial":            plainUpgrade[:len(plainUpgrade)-2],
		"bytes after":        plainUpgrade + "\x81\x85",
		"two requests":       plainUpgrade + plainUpgrade,
		"POST":               replace("GET", "POST"),
		"HTTP/1.0":           replace("HTTP/1.1", "HTTP/1.0"),
		"other path":         replace("/ws?", "/wss?"),
		"escaped path":       replace("/ws?", "/w%73?"),
		"absolute target":    replace("/ws?", "http://chat.example:8080/ws?"),
		"fragment":           replace("lobby", "lobby#x"),
		"no host":            replace("Host: chat.example:8080\r\n", ""),
		"key twice":          replace("Origin", "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\nOrigin"),
		"host twice":         replace("Origin", "Host: evil\r\nOrigin"),
		"origin twice":       replace("User-Agent", "Origin: http://evil\r\nUser-Agent"),
		"folded line":        replace("User-Agent: test\r\n", "User-Agent: test\r\n more\r\n"),
		"space before colon": replace("Host:", "Host :"),
		"no colon":           replace("User-Agent: test", "User-Agent test"),
		"bare LF":            replace("User-Agent: test", "User-Agent: te\nst"),
		"bare CR":            replace("User-Agent: test", "User-Agent: te\rst"),
		"body":               replace("User-Agent", "Content-Length: 0\r\nUser-Agent"),
		"chunked":            replace("User-Agent", "Transfer-Encoding: chunked\r\nUser-Agent"),
	}
}

// FuzzUpgradeHead checks upgradeHead against net/http: whatever it reads
// as a plain upgrade, net/http reads as the same request.
func FuzzUpgradeHead(f *testing.F) {
	f.Add([]byte(plainUpgrade))
	f.Add([]byte("GET /ws HTTP/1.1\r\nHost: h\r\nConnection: a, upgrade\r\n\r\n"))
	f.Add([]byte("GET /ws?a=%zz HTTP/1.1\r\nHost: h\r\nX: \t y \t\r\n\r\n"))
	for _, req := range notPlain() {
		f.Add([]byte(req))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var h upgradeHead
		if !h.parse(data) {
			return
		}
		r, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(data)))
		if err != nil {
			t.Fatalf("read as an upgrade, net/http refuses it: %v", err)
		}
		if r.Method != http.MethodGet || r.URL.Path != "/ws" || r.URL.RawQuery != string(h.query) || r.Host != string(h.host) {
			t.Fatalf("read %q %q, net/http %s %q %q %q", h.query, h.host, r.Method, r.URL.Path, r.URL.RawQuery, r.Host)
		}
		for name, got := range map[string][]byte{
			"Connection": h.connection, "Upgrade": h.upgrade, "Sec-WebSocket-Version": h.version,
			"Sec-WebSocket-Key": h.key, "Origin": h.origin, "Sec-WebSocket-Extensions": h.extensions,
		} {
			if want := r.Header.Values(name); got == nil && len(want) != 0 || got != nil && (len(want) != 1 || want[0] != string(got)) {
				t.Fatalf("%s: read %q, net/http %q", name, got, want)
			}
		}
	})
}

func TestPlainUpgradesSkipNbhttp(t *testing.T) {
	s := startServer(t, Config{Room: room.Config{Sessions: 1}})
	a := connect(t, s.Addr(), "ann", "lobby")
	if n := s.m.fastUpgrades.Load(); n != 1 {
		t.Fatalf("fast upgrades = %d after one plain upgrade, want 1", n)
	}
	// One byte at a time, the first read is not the whole request: nbhttp
	// reads it, and the connection works the same.
	conn := dialFrom(t, "", s.Addr())
	t.Cleanup(func() { conn.Close() })
	req := upgradeRequest(s.Addr(), "/ws?name=bob&room=lobby", nil)
	for i := range req {
		if _, err := conn.Write(req[i : i+1]); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond)
	}
	r := bufio.NewReader(conn)
	resp, err := http.ReadResponse(r, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("byte-by-byte upgrade: %v %v", resp, err)
	}
	b := &testClient{t: t, conn: conn, r: r}
	b.expect("welcome")
	b.expect("joined")
	// (Which path took it depends on how the reads fell, so only the
	// result is checked; TestUpgradeHeadLeavesTheRestToNbhttp checks that
	// a partial request is left to nbhttp.)
	a.await("presence")
	b.send(`{"type":"msg","room":"lobby","text":"hi"}`)
	if m := a.await("msg"); m.str("text") != "hi" || m.str("from") != "bob" {
		t.Fatalf("ann got %v", m)
	}
	// A refused one is answered by serveWS, as before.
	before := s.m.fastUpgrades.Load()
	if status, _ := handshake(t, s.Addr(), "/ws?name=ann", nil); status != http.StatusConflict {
		t.Fatalf("taken name: status %d, want 409", status)
	}
	if n := s.m.fastUpgrades.Load(); n != before {
		t.Fatalf("fast upgrades went from %d to %d, want the refused one left to nbhttp", before, n)
	}
}
