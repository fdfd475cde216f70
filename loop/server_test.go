package loop

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"nbchat/room"
)

func contextWithTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}

func TestRoomChatReachesMembersOnly(t *testing.T) {
	s := startServer(t, Config{})
	alice := connect(t, s.Addr(), "alice", "lobby")
	bob := connect(t, s.Addr(), "bob", "lobby")
	carol := connect(t, s.Addr(), "carol", "other")
	alice.expect("presence") // bob joined

	alice.send(`{"type":"msg","room":"lobby","text":"hi bob"}`)
	for _, c := range []*testClient{alice, bob} {
		m := c.expect("msg")
		if m.str("from") != "alice" || m.str("text") != "hi bob" || m.str("room") != "lobby" || m.num("seq") != 1 || m.num("ts") == 0 {
			t.Fatalf("got %v", m)
		}
	}
	bob.send(`{"type":"msg","room":"lobby","text":"hi \"alice\"\n<b>"}`)
	for _, c := range []*testClient{alice, bob} {
		if m := c.expect("msg"); m.num("seq") != 2 || m.str("text") != "hi \"alice\"\n<b>" {
			t.Fatalf("got %v", m)
		}
	}
	carol.expectNothing(200 * time.Millisecond)
}

func TestDirectMessageReachesTargetAndSender(t *testing.T) {
	s := startServer(t, Config{})
	alice := connect(t, s.Addr(), "alice", "")
	bob := connect(t, s.Addr(), "bob", "")
	carol := connect(t, s.Addr(), "carol", "")

	alice.send(`{"type":"dm","to":"bob","text":"psst"}`)
	for _, c := range []*testClient{bob, alice} {
		m := c.expect("dm")
		if m.str("from") != "alice" || m.str("to") != "bob" || m.str("text") != "psst" {
			t.Fatalf("got %v", m)
		}
	}
	alice.send(`{"type":"dm","to":"alice","text":"note to self"}`)
	alice.expect("dm")
	alice.send(`{"type":"dm","to":"nobody","text":"x","id":7}`)
	if m := alice.expect("error"); m.str("code") != "no_such_user" || m.num("ref") != 7 {
		t.Fatalf("got %v", m)
	}
	carol.expectNothing(200 * time.Millisecond)
	bob.expectNothing(50 * time.Millisecond)
}

func TestPresenceAndMembersInSmallRoom(t *testing.T) {
	s := startServer(t, Config{})
	alice := connect(t, s.Addr(), "alice", "")
	alice.send(`{"type":"join","room":"lobby","id":"j1"}`)
	if m := alice.expect("joined"); m.num("count") != 1 || m.str("ref") != "j1" || !slices.Equal(m.names("members"), []string{"alice"}) {
		t.Fatalf("got %v", m)
	}
	bob := connect(t, s.Addr(), "bob", "lobby")
	if m := alice.expect("presence"); m.str("event") != "join" || m.str("name") != "bob" || m.num("count") != 2 {
		t.Fatalf("got %v", m)
	}
	bob.send(`{"type":"members","room":"lobby","id":1}`)
	if m := bob.expect("members"); !slices.Equal(m.names("members"), []string{"alice", "bob"}) || m.num("count") != 2 {
		t.Fatalf("got %v", m)
	}
	bob.send(`{"type":"leave","room":"lobby"}`)
	bob.expect("left")
	if m := alice.expect("presence"); m.str("event") != "leave" || m.str("name") != "bob" || m.num("count") != 1 {
		t.Fatalf("got %v", m)
	}
	bob.send(`{"type":"leave","room":"lobby"}`)
	if m := bob.expect("error"); m.str("code") != "not_member" {
		t.Fatalf("got %v", m)
	}
	// A closing connection leaves its rooms.
	carol := connect(t, s.Addr(), "carol", "lobby")
	alice.expect("presence")
	carol.conn.Close()
	if m := alice.expect("presence"); m.str("event") != "leave" || m.str("name") != "carol" {
		t.Fatalf("got %v", m)
	}
}

func TestPresenceIsCoalescedInBigRoom(t *testing.T) {
	s := startServer(t, Config{Room: room.Config{PresenceLimit: 3, PresenceInterval: 50 * time.Millisecond}})
	watcher := connect(t, s.Addr(), "watcher", "big")
	var clients []*testClient
	for i := range 30 {
		clients = append(clients, connect(t, s.Addr(), fmt.Sprintf("u%02d", i), "big"))
	}
	// The first joins come one by one; past the limit they are batched.
	seen := map[string]bool{}
	var batches int
	for len(seen) < 30 {
		m := watcher.expect("presence")
		if m.str("event") == "join" {
			seen[m.str("name")] = true
			continue
		}
		batches++
		for _, n := range m.names("joined") {
			seen[n] = true
		}
	}
	if batches == 0 || batches > 10 {
		t.Fatalf("%d presence batches for 30 joins, want a few", batches)
	}
	clients[0].send(`{"type":"join","room":"big"}`)
	if m := clients[0].await("joined"); m.num("count") != 31 {
		t.Fatalf("got %v", m)
	}
}

func TestHandshakeRefusals(t *testing.T) {
	s := startServer(t, Config{Room: room.Config{Sessions: 1}})
	connect(t, s.Addr(), "alice", "")
	cases := []struct {
		name, path string
		header     http.Header
		want       int
	}{
		{"name taken", "/ws?name=alice", nil, http.StatusConflict},
		{"bad name", "/ws?name=a%20b", nil, http.StatusBadRequest},
		{"missing name", "/ws", nil, http.StatusBadRequest},
		{"long name", "/ws?name=" + strings.Repeat("x", 33), nil, http.StatusBadRequest},
		{"bad room", "/ws?name=bob&room=a/b", nil, http.StatusBadRequest},
		{"wrong version", "/ws?name=bob", http.Header{"Sec-WebSocket-Version": {"8"}}, http.StatusUpgradeRequired},
		{"bad key", "/ws?name=bob", http.Header{"Sec-WebSocket-Key": {"short"}}, http.StatusBadRequest},
		{"cross-site origin", "/ws?name=bob", http.Header{"Origin": {"http://evil.example"}}, http.StatusForbidden},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, c := handshake(t, s.Addr(), tc.path, tc.header)
			if status != tc.want {
				t.Fatalf("status %d, want %d", status, tc.want)
			}
			c.expectEOF(2 * time.Second) // a refused client holds no socket

		})
	}
	status, _ := handshake(t, s.Addr(), "/ws?name=bob", http.Header{"Origin": {"http://" + s.Addr()}})
	if status != http.StatusSwitchingProtocols {
		t.Fatalf("same-origin upgrade: status %d", status)
	}
}

func TestBadRequestsGetErrorsAndConnectionStaysUsable(t *testing.T) {
	s := startServer(t, Config{MaxText: 16})
	c := connect(t, s.Addr(), "alice", "lobby")
	cases := []struct{ req, code string }{
		{`not json`, "bad_request"},
		{`{"type":"dance"}`, "unknown_type"},
		{`{"room":"lobby"}`, "bad_request"},
		{`{"type":"msg","room":"lobby"}`, "bad_request"},
		{`{"type":"msg","room":"lobby","text":""}`, "bad_request"},
		{`{"type":"msg","room":"lobby","text":"` + strings.Repeat("x", 17) + `"}`, "too_large"},
		{`{"type":"join","room":"no spaces"}`, "bad_name"},
		{`{"type":"msg","room":"elsewhere","text":"x"}`, "not_member"},
	}
	for _, tc := range cases {
		c.send(tc.req)
		if m := c.expect("error"); m.str("code") != tc.code || m.str("message") == "" {
			t.Fatalf("%s: got %v, want code %s", tc.req, m, tc.code)
		}
	}
	c.writeFrame(true, 0x2, []byte{1, 2, 3}, true)
	if m := c.expect("error"); m.str("code") != "bad_request" {
		t.Fatalf("binary: got %v", m)
	}
	c.send(`{"type":"msg","room":"lobby","text":"still here"}`)
	if m := c.expect("msg"); m.str("text") != "still here" {
		t.Fatalf("got %v", m)
	}
}

func TestBigRoomGetsEveryBroadcastInOrder(t *testing.T) {
	const members, msgs = 2000, 5
	s := startServer(t, Config{})
	clients := make([]*testClient, members)
	for i := range clients {
		clients[i] = connect(t, s.Addr(), fmt.Sprintf("m%d", i), "arena")
	}
	for i := range msgs {
		clients[i].send(fmt.Sprintf(`{"type":"msg","room":"arena","text":"n%d"}`, i))
	}
	for i, c := range clients {
		want := int64(1)
		for want <= msgs {
			m, err := c.next(10 * time.Second)
			if err != nil {
				t.Fatalf("member %d: %v", i, err)
			}
			if m.str("type") != "msg" {
				continue // presence
			}
			if m.num("seq") != want || m.str("text") != fmt.Sprintf("n%d", want-1) {
				t.Fatalf("member %d: got %v, want seq %d", i, m, want)
			}
			want++
		}
	}
}

func TestGoroutinesStayFlatWithManyConnections(t *testing.T) {
	const n = 5000
	s := startServer(t, Config{})
	connect(t, s.Addr(), "warmup", "r0")
	time.Sleep(100 * time.Millisecond)
	before := runtime.NumGoroutine()
	for i := range n {
		connect(t, s.Addr(), fmt.Sprintf("c%d", i), fmt.Sprintf("r%d", i%50))
	}
	if s.Conns() != n+1 {
		t.Fatalf("server counts %d connections, want %d", s.Conns(), n+1)
	}
	time.Sleep(100 * time.Millisecond)
	after := runtime.NumGoroutine()
	// Executor goroutines come and go; what must not appear is one per
	// connection.
	if after-before > 50 {
		t.Fatalf("goroutines grew from %d to %d with %d connections", before, after, n)
	}
}

func TestShutdownClosesClientsWith1001(t *testing.T) {
	s, err := New(Config{Addr: "127.0.0.1:0", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	clients := []*testClient{connect(t, s.Addr(), "a", "lobby"), connect(t, s.Addr(), "b", "")}
	done := make(chan error, 1)
	go func() {
		ctx, cancel := contextWithTimeout(5 * time.Second)
		defer cancel()
		done <- s.Shutdown(ctx)
	}()
	for _, c := range clients {
		if code := c.expectClose(3 * time.Second); code != CloseGoingAway {
			t.Fatalf("close code %d, want 1001", code)
		}
		c.writeFrame(true, 0x8, []byte{0x03, 0xE9}, true)
		c.expectEOF(3 * time.Second)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Shutdown did not return")
	}
}

func TestHealthAndMetrics(t *testing.T) {
	s := startServer(t, Config{})
	c := connect(t, s.Addr(), "alice", "lobby")
	c.send(`{"type":"msg","room":"lobby","text":"hi"}`)
	c.expect("msg")
	res, err := http.Get("http://" + s.Addr() + "/healthz")
	if err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("healthz: %v %v", res, err)
	}
	res.Body.Close()
	res, err = http.Get("http://" + s.Addr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	for _, want := range []string{
		"nbchat_connections 1", "nbchat_rooms 1", "nbchat_deliveries_total", "nbchat_messages_in_total 1",
		"nbchat_broadcast_fanout_seconds_count", "process_resident_memory_bytes", "go_goroutines",
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

// TestPollersFollowGOMAXPROCS checks that the default poller and flusher
// counts come from the CPUs Go may use (a container's quota), not the host's.
func TestPollersFollowGOMAXPROCS(t *testing.T) {
	old := runtime.GOMAXPROCS(6)
	defer runtime.GOMAXPROCS(old)
	s, err := New(Config{Addr: "127.0.0.1:0", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Hub().Close()
	if s.Pollers() != 3 || len(s.flushers) != 3 {
		t.Fatalf("GOMAXPROCS 6: %d pollers, %d flushers, want 3 and 3", s.Pollers(), len(s.flushers))
	}
}
