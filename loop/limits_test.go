package loop

import (
	"bufio"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"nbchat/room"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// upgradeRequest is a valid upgrade request for path.
func upgradeRequest(host, path string, header http.Header) []byte {
	var key [16]byte
	_, _ = rand.Read(key[:])
	var b strings.Builder
	fmt.Fprintf(&b, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: %s\r\n",
		path, host, base64.StdEncoding.EncodeToString(key[:]))
	for k, vs := range header {
		for _, v := range vs {
			fmt.Fprintf(&b, "%s: %s\r\n", k, v)
		}
	}
	b.WriteString("\r\n")
	return []byte(b.String())
}

// upgradeOn does the handshake on an open conn, so tests can dial it as
// they like (source address, socket buffers). The response body, if any,
// is consumed.
func upgradeOn(t testing.TB, conn net.Conn, host, path string) (*http.Response, *testClient) {
	t.Helper()
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write(upgradeRequest(host, path, nil)); err != nil {
		t.Fatalf("write handshake: %v", err)
	}
	r := bufio.NewReader(conn)
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		t.Fatalf("read handshake response: %v", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		_, _ = io.Copy(io.Discard, resp.Body)
	}
	_ = conn.SetDeadline(time.Time{})
	return resp, &testClient{t: t, conn: conn, r: r}
}

func dialFrom(t testing.TB, src, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second}
	if src != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
	}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s from %s: %v", addr, src, err)
	}
	return conn
}

// answerPings reads frames for d, answering each ping with a pong as a
// live client does; it returns the first non-control frame's error or nil.
func (c *testClient) answerPings(d time.Duration) (pings int, err error) {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		_, op, p, err := c.readFrame(time.Until(deadline))
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			return pings, nil
		}
		if err != nil {
			return pings, err
		}
		switch op {
		case 0x9:
			pings++
			c.writeFrame(true, 0xA, p, true)
		case 0x8:
			return pings, &closeFrameError{payload: p}
		}
	}
	return pings, nil
}

func TestRateLimitBurstGetsRateLimitedErrors(t *testing.T) {
	s := startServer(t, Config{})
	c := connect(t, s.Addr(), "bursty", "")
	const n = 150
	var b []byte
	for i := range n {
		b = append(b, clientFrame(true, 0x1, fmt.Appendf(nil, `{"type":"ping","id":%d}`, i), true)...)
	}
	_, _ = c.conn.Write(b)
	pongs, limited := 0, 0
	for range n {
		m := c.expectAny()
		switch {
		case m.str("type") == "pong":
			pongs++
		case m.str("type") == "error" && m.str("code") == "rate_limited":
			limited++
		default:
			t.Fatalf("got %v", m)
		}
	}
	// The burst is 100; a tick or two of refill (5 per 100 ms) may land
	// inside the write.
	if pongs < 100 || pongs > 115 || limited == 0 {
		t.Fatalf("%d pongs and %d rate_limited errors for %d requests", pongs, limited, n)
	}
	// Under the limit again after a pause: the connection is still usable.
	time.Sleep(300 * time.Millisecond)
	c.send(`{"type":"ping","id":"after"}`)
	if m := c.expect("pong"); m.str("ref") != "after" {
		t.Fatalf("got %v", m)
	}
}

func TestRateLimitFloodClosesWith1008(t *testing.T) {
	s := startServer(t, Config{})
	c := connect(t, s.Addr(), "flooder", "")
	var b []byte
	for range 1000 {
		b = append(b, clientFrame(true, 0x1, []byte(`{"type":"ping"}`), true)...)
	}
	_, _ = c.conn.Write(b)
	if code := c.expectClose(5 * time.Second); code != ClosePolicy {
		t.Fatalf("close code %d, want 1008", code)
	}
	c.writeFrame(true, 0x8, closePayload(ClosePolicy, ""), true)
	c.expectEOF(3 * time.Second)
	// Counted once nbio has closed the socket, which may be after the EOF.
	waitFor(t, func() bool { return metricValue(t, s, `nbchat_closes_total{reason="rate_limit"}`) == "1" })
}

func TestRoomsPerConnectionAreCapped(t *testing.T) {
	s := startServer(t, Config{MaxRoomsPerConn: 3})
	c := connect(t, s.Addr(), "joiner", "r1")
	c.send(`{"type":"join","room":"r2"}`)
	c.expect("joined")
	c.send(`{"type":"join","room":"r3"}`)
	c.expect("joined")
	c.send(`{"type":"join","room":"r4","id":4}`)
	if m := c.expect("error"); m.str("code") != "too_many_rooms" || m.num("ref") != 4 {
		t.Fatalf("got %v", m)
	}
	// Joining a room it is in changes nothing; leaving makes room.
	c.send(`{"type":"join","room":"r3"}`)
	c.expect("joined")
	c.send(`{"type":"leave","room":"r1"}`)
	c.expect("left")
	c.send(`{"type":"join","room":"r4"}`)
	c.expect("joined")
}

func TestMaxConnsGets503WithRetryAfter(t *testing.T) {
	s := startServer(t, Config{MaxConns: 3})
	var open []*testClient
	for i := range 3 {
		open = append(open, connect(t, s.Addr(), fmt.Sprintf("u%d", i), ""))
	}
	resp, _ := upgradeOn(t, dialFrom(t, "", s.Addr()), s.Addr(), "/ws?name=late")
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("status %d, Retry-After %q; want 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	// A slot frees when a client leaves.
	open[0].writeFrame(true, 0x8, closePayload(1000, ""), true)
	open[0].expectClose(3 * time.Second)
	open[0].expectEOF(3 * time.Second)
	open[0].conn.Close()
	waitFor(t, func() bool { return s.Conns() == 2 })
	connect(t, s.Addr(), "late", "")
}

func TestConnsPerIPGet429(t *testing.T) {
	s := startServer(t, Config{MaxConnsPerIP: 2, Room: room.Config{Sessions: 1}})
	a := connect(t, s.Addr(), "a", "")
	connect(t, s.Addr(), "b", "")
	resp, _ := upgradeOn(t, dialFrom(t, "127.0.0.1", s.Addr()), s.Addr(), "/ws?name=c")
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("status %d, Retry-After %q; want 429 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	// Another address is counted apart.
	resp, c := upgradeOn(t, dialFrom(t, "127.0.0.2", s.Addr()), s.Addr(), "/ws?name=c")
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("from 127.0.0.2: status %d", resp.StatusCode)
	}
	c.expect("welcome")
	// A refusal after the count (name taken) does not leak a slot, and a
	// close frees one.
	a2 := netip.MustParseAddr("127.0.0.1")
	resp, _ = upgradeOn(t, dialFrom(t, "127.0.0.2", s.Addr()), s.Addr(), "/ws?name=a")
	if resp.StatusCode != http.StatusConflict {
		t.Fatalf("taken name: status %d", resp.StatusCode)
	}
	a.writeFrame(true, 0x8, closePayload(1000, ""), true)
	a.expectClose(3 * time.Second)
	a.expectEOF(3 * time.Second)
	a.conn.Close()
	waitFor(t, func() bool { return s.perIP.count(a2) == 1 })
	resp, c = upgradeOn(t, dialFrom(t, "127.0.0.1", s.Addr()), s.Addr(), "/ws?name=d")
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("after a close: status %d", resp.StatusCode)
	}
	c.expect("welcome")
	if n := s.perIP.count(netip.MustParseAddr("127.0.0.2")); n != 1 {
		t.Fatalf("127.0.0.2 counted %d times, want 1", n)
	}
}

func TestHandshakeTimeoutClosesSilentClients(t *testing.T) {
	s := startServer(t, Config{HandshakeTimeout: time.Second})
	silent := dialFrom(t, "", s.Addr())
	defer silent.Close()
	// A slow-loris: half a request, never finished.
	partial := dialFrom(t, "", s.Addr())
	defer partial.Close()
	_, _ = partial.Write([]byte("GET /ws?name=slow HTTP/1.1\r\nHost: x\r\n"))
	start := time.Now()
	for _, c := range []net.Conn{silent, partial} {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err := io.ReadAll(c)
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatal("not closed within 5s")
		}
	}
	if d := time.Since(start); d < 800*time.Millisecond || d > 3*time.Second {
		t.Fatalf("closed after %v, want about 1s", d)
	}
	// A client that completes its handshake in time is not affected.
	c := connect(t, s.Addr(), "prompt", "")
	time.Sleep(1500 * time.Millisecond)
	c.send(`{"type":"ping","id":1}`)
	c.expect("pong")
}

func TestIdleTimeoutWithPings(t *testing.T) {
	s := startServer(t, Config{PingInterval: time.Second, IdleTimeout: 3 * time.Second})
	dead := connect(t, s.Addr(), "dead", "")
	live := connect(t, s.Addr(), "live", "")

	type result struct {
		pings int
		err   error
	}
	liveDone := make(chan result, 1)
	go func() {
		pings, err := live.answerPings(5 * time.Second)
		liveDone <- result{pings, err}
	}()

	// The dead client reads but answers nothing: pinged, then closed.
	start := time.Now()
	sawPing := false
	for {
		_, op, p, err := dead.readFrame(6 * time.Second)
		if err != nil {
			t.Fatalf("dead client: %v", err)
		}
		if op == 0x9 {
			sawPing = true
			continue
		}
		if op == 0x8 {
			if code := int(p[0])<<8 | int(p[1]); code != CloseGoingAway {
				t.Fatalf("close code %d, want 1001", code)
			}
			break
		}
	}
	if d := time.Since(start); !sawPing || d < 2*time.Second || d > 5*time.Second {
		t.Fatalf("dead client: pinged %v, closed after %v; want a ping and a close after about 3s", sawPing, d)
	}

	r := <-liveDone
	if r.err != nil || r.pings < 2 {
		t.Fatalf("live client: %d pings answered, err %v", r.pings, r.err)
	}
	live.send(`{"type":"ping","id":1}`)
	if m := live.expect("pong"); m.num("ref") != 1 {
		t.Fatalf("got %v", m)
	}
	// Counted once the socket is gone: the dead client does not answer
	// the close either, so after CloseGrace.
	waitFor(t, func() bool { return metricValue(t, s, `nbchat_closes_total{reason="idle"}`) == "1" })
}

// TestSlowConsumerIsClosedOthersGetEverything floods a room while one
// member stops reading: the others receive every message in order, the
// slow one is closed with 4008, and the server's memory stays bounded.
func TestSlowConsumerIsClosedOthersGetEverything(t *testing.T) {
	const (
		maxPending = 256 << 10
		messages   = 4000
		textSize   = 3000
	)
	s := startServer(t, Config{MaxPending: maxPending, RateLimit: 1e6, RateBurst: 1e6})

	// The slow client's receive buffer is kept small, so the server, not
	// the kernel, holds what it does not read.
	d := net.Dialer{Timeout: 5 * time.Second, Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) {
			_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		})
	}}
	raw, err := d.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	resp, slow := upgradeOn(t, raw, s.Addr(), "/ws?name=slow&room=flood")
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("slow: status %d", resp.StatusCode)
	}
	slow.expect("welcome")
	slow.expect("joined")

	sender := connect(t, s.Addr(), "sender", "flood")
	readers := []*testClient{sender, connect(t, s.Addr(), "r1", "flood"), connect(t, s.Addr(), "r2", "flood")}

	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)

	// Every reader drains concurrently and checks order; the sender writes
	// as fast as the readers keep up (a window of messages in flight well
	// under MaxPending), so only the member that stopped reading falls
	// behind.
	var wg sync.WaitGroup
	progress := make([]atomic.Int64, len(readers))
	errs := make([]error, len(readers))
	durations := make([]time.Duration, len(readers))
	start := time.Now()
	for i, c := range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = receiveInOrder(c, messages, textSize, &progress[i])
			durations[i] = time.Since(start)
		}()
	}
	text := strings.Repeat("y", textSize)
	const batchSize, window = 20, 40
	var batch []byte
	for sent := 0; sent < messages; sent += batchSize {
		for waited := time.Now(); ; time.Sleep(100 * time.Microsecond) {
			lowest := int64(messages)
			for i := range progress {
				lowest = min(lowest, progress[i].Load())
			}
			if int64(sent)-lowest <= window-batchSize {
				break
			}
			if time.Since(waited) > 20*time.Second {
				t.Fatalf("readers stuck at %d of %d sent (errs %v)", lowest, sent, errs)
			}
		}
		batch = batch[:0]
		for range batchSize {
			batch = append(batch, clientFrame(true, 0x1, []byte(`{"type":"msg","room":"flood","text":"`+text+`"}`), true)...)
		}
		if _, err := sender.conn.Write(batch); err != nil {
			t.Fatalf("sender: %v", err)
		}
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("reader %d: %v", i, err)
		}
	}
	t.Logf("%d messages of %d bytes reached every reader in %v", messages, textSize, durations)

	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	// The flood was about 12 MB per member; what the slow one may cost is
	// bounded by MaxPending (plus nbio's backstop of twice that).
	if grow := int64(after.HeapAlloc) - int64(before.HeapAlloc); grow > 16<<20 {
		t.Fatalf("heap grew by %d MB during the flood", grow>>20)
	}

	// The slow one was closed: reading again, it finds the close frame
	// after what was queued, or a socket already closed.
	code, err := drainToClose(slow, 10*time.Second)
	switch {
	case err == nil && code != CloseSlowConsumer:
		t.Fatalf("slow client: close code %d, want %d", code, CloseSlowConsumer)
	case err != nil && !isConnGone(err):
		t.Fatalf("slow client: %v", err)
	}
	t.Logf("slow client: close code %d, err %v", code, err)
	waitFor(t, func() bool {
		return metricValue(t, s, `nbchat_closes_total{reason="slow_consumer"}`) == "1"
	})
}

// receiveInOrder reads n chat messages of size text bytes and checks that
// their seq numbers run 1..n without gaps.
func receiveInOrder(c *testClient, n, size int, progress *atomic.Int64) error {
	var want int64 = 1
	for want <= int64(n) {
		m, err := c.next(20 * time.Second)
		if err != nil {
			return fmt.Errorf("after %d messages: %w", want-1, err)
		}
		switch m.str("type") {
		case "msg":
			if m.num("seq") != want || len(m.str("text")) != size {
				return fmt.Errorf("got seq %d (%d bytes), want %d", m.num("seq"), len(m.str("text")), want)
			}
			progress.Store(want)
			want++
		case "presence":
		default:
			return fmt.Errorf("unexpected %v", m)
		}
	}
	return nil
}

// drainToClose reads frames until a close frame (returning its code) or an
// error.
func drainToClose(c *testClient, d time.Duration) (int, error) {
	deadline := time.Now().Add(d)
	for {
		_, op, p, err := c.readFrame(time.Until(deadline))
		if err != nil {
			return 0, err
		}
		if op == 0x8 && len(p) >= 2 {
			return int(p[0])<<8 | int(p[1]), nil
		}
	}
}

func isConnGone(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET)
}

func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatal("condition not met within 5s")
}

func TestConnsPerIPCountIPv6By64(t *testing.T) {
	for _, tc := range []struct{ remote, want string }{
		{"192.0.2.7:5000", "192.0.2.7"},
		{"[::ffff:192.0.2.7]:5000", "192.0.2.7"},
		{"[2001:db8:1:2:aaaa::1]:5000", "2001:db8:1:2::"},
		{"[2001:db8:1:2:bbbb::9]:6000", "2001:db8:1:2::"},
		{"[2001:db8:1:3::1]:5000", "2001:db8:1:3::"},
		{"[::1]:5000", "::"},
		{"not an address", "invalid IP"},
	} {
		if got := addrOf(tc.remote).String(); got != tc.want {
			t.Errorf("addrOf(%q) = %s, want %s", tc.remote, got, tc.want)
		}
	}
}

func TestUpgradeRateGets503WithSpreadRetryAfter(t *testing.T) {
	// One upgrade per 2 s, no more at once: the second comes too soon.
	s := startServer(t, Config{MaxUpgradeRate: 0.5})
	connect(t, s.Addr(), "ann", "")
	resp, _ := upgradeOn(t, dialFrom(t, "", s.Addr()), s.Addr(), "/ws?name=bob")
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("second upgrade at once: status %d, want 503", resp.StatusCode)
	}
	if n, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || n < 1 || n > 5 {
		t.Fatalf("Retry-After %q, want 1-5 seconds", resp.Header.Get("Retry-After"))
	}
}

func TestUpgradeRateBurstsAndRefunds(t *testing.T) {
	u := newUpgradeRate(10) // one per 100 ms, ten at once
	now := int64(time.Hour)
	for i := range 10 {
		if !u.allow(now) {
			t.Fatalf("upgrade %d of a burst of 10 refused", i+1)
		}
	}
	if u.allow(now) {
		t.Fatal("an 11th upgrade in the same instant allowed")
	}
	later := now + int64(100*time.Millisecond)
	if !u.allow(later) {
		t.Fatal("no credit back after one interval")
	}
	if u.allow(later) {
		t.Fatal("two credits back after one interval")
	}
	u.refund()
	if !u.allow(later) {
		t.Fatal("a refunded credit cannot be used")
	}
	var off *upgradeRate
	if !off.allow(now) {
		t.Fatal("no limit refuses")
	}
	off.refund()
}

// TestShortHandshakeTimeoutSparesUpgraded: with a one-second handshake
// timeout, connections upgraded at once must outlive it. nbhttp arms the
// timeout only after the socket is with its poller, which may have upgraded
// it (and cleared the timeout) meanwhile; reused fd numbers, registered off
// the accept loop, widen that window.
func TestShortHandshakeTimeoutSparesUpgraded(t *testing.T) {
	s := startServer(t, Config{HandshakeTimeout: time.Second, PingInterval: time.Hour, IdleTimeout: 2 * time.Hour})
	const n = 200
	connectAll := func(round int) []*testClient {
		out := make([]*testClient, n)
		for i := range out {
			out[i] = connect(t, s.Addr(), fmt.Sprintf("r%d-%d", round, i), "")
		}
		return out
	}
	for _, c := range connectAll(0) { // their numbers are reused next
		c.conn.Close()
	}
	waitFor(t, func() bool { return s.conns.count.Load() == 0 })
	clients := connectAll(1)
	time.Sleep(1500 * time.Millisecond)
	closed, slow := 0, 0
	for _, c := range clients {
		c.send(`{"type":"ping","id":1}`)
		if _, err := c.next(5 * time.Second); err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				slow++
			} else {
				closed++
			}
		}
	}
	if closed > 0 || slow > 0 {
		t.Fatalf("of %d upgraded connections %d were closed (the handshake timeout) and %d did not answer a ping within 5s", n, closed, slow)
	}
}

// A plain connection holds a place under MaxLoad from accept to close,
// upgraded or not: past MaxLoad a new one is closed at once, and every
// close, of an idle socket or of a WebSocket, gives its place back.
func TestPlainConnectionsHeldToMaxLoad(t *testing.T) {
	s := startServer(t, Config{MaxConns: 5})
	limit := int64(s.engine.MaxLoad)
	held := func(want int64) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for s.plain.Load() != want {
			if time.Now().After(deadline) {
				t.Fatalf("%d plain connections counted, want %d", s.plain.Load(), want)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	var idle []net.Conn
	defer func() {
		for _, c := range idle {
			_ = c.Close()
		}
	}()
	for range limit - 1 {
		idle = append(idle, dialFrom(t, "", s.Addr()))
	}
	held(limit - 1)
	ws := connect(t, s.Addr(), "holder", "")
	held(limit)

	extra := dialFrom(t, "", s.Addr())
	defer extra.Close()
	_ = extra.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := extra.Read(make([]byte, 1)); err == nil {
		t.Fatal("a connection past MaxLoad was answered")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("a connection past MaxLoad was kept open")
	}
	held(limit)

	for _, c := range idle[:10] {
		_ = c.Close()
	}
	idle = idle[10:]
	_ = ws.conn.Close()
	held(limit - 11)
	if s.Conns() != 0 {
		t.Fatalf("%d WebSocket connections after the only one closed", s.Conns())
	}

	// The places are usable: a page request (parsed by nbhttp) and an upgrade.
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + s.Addr() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/healthz: %d", resp.StatusCode)
	}
	c := connect(t, s.Addr(), "next", "")
	c.send(`{"type":"ping","id":1}`)
	c.expect("pong")
}

func TestSizeLimitsOverOneGiBAreRefused(t *testing.T) {
	for _, cfg := range []Config{{MaxMessage: 1<<30 + 1}, {MaxPending: 1<<30 + 1}} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New accepted max message %d, max pending %d", cfg.MaxMessage, cfg.MaxPending)
		}
	}
}
