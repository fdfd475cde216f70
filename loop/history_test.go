package loop

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"nbchat/room"
	"nbchat/store"
)

// TestReconnectWithSinceGetsExactlyTheMissedMessages: clients chat while
// one disconnects and reconnects with since; it gets exactly what it
// missed, then live messages, with no gap and no duplicate.
func TestReconnectWithSinceGetsExactlyTheMissedMessages(t *testing.T) {
	s := startServer(t, Config{})
	alice := connect(t, s.Addr(), "alice", "lobby")
	bob := connect(t, s.Addr(), "bob", "lobby")
	alice.expect("presence")
	for i := range 3 {
		alice.send(fmt.Sprintf(`{"type":"msg","room":"lobby","text":"m%d"}`, i))
	}
	var last int64
	for range 3 {
		alice.await("msg")
		last = bob.await("msg").num("seq")
	}
	bob.conn.Close()
	alice.await("presence") // bob left
	for i := 3; i < 7; i++ {
		alice.send(fmt.Sprintf(`{"type":"msg","room":"lobby","text":"m%d"}`, i))
	}
	for range 4 {
		alice.await("msg")
	}

	bob = connect(t, s.Addr(), "bob", "")
	bob.send(fmt.Sprintf(`{"type":"join","room":"lobby","since":%d,"id":"re"}`, last))
	j := bob.expect("joined")
	if j["recovered"] != true || j.num("seq") != 7 {
		t.Fatalf("joined %v, want recovered:true seq 7", j)
	}
	alice.send(`{"type":"msg","room":"lobby","text":"live"}`)
	for want := last + 1; want <= 8; want++ {
		m := bob.await("msg")
		if m.num("seq") != want || m.str("text") != fmt.Sprintf("m%d", want-1) && want != 8 {
			t.Fatalf("got %v, want seq %d", m, want)
		}
	}
	bob.expectNothing(100 * time.Millisecond)
}

func TestNewcomerSeesRecentMessagesAfterJoined(t *testing.T) {
	s := startServer(t, Config{})
	alice := connect(t, s.Addr(), "alice", "lobby")
	alice.send(`{"type":"msg","room":"lobby","text":"before you came"}`)
	alice.expect("msg")
	bob := connect(t, s.Addr(), "bob", "lobby") // reads welcome and joined
	if m := bob.expect("msg"); m.str("text") != "before you came" || m.num("seq") != 1 {
		t.Fatalf("got %v", m)
	}
}

func TestMessageWithIDIsAckedOnceAndResendIsNotDelivered(t *testing.T) {
	s := startServer(t, Config{})
	alice := connect(t, s.Addr(), "alice", "lobby")
	bob := connect(t, s.Addr(), "bob", "lobby")
	alice.expect("presence")
	msg := `{"type":"msg","room":"lobby","text":"once","id":"m-1"}`
	alice.send(msg)
	if m := alice.expect("msg"); m.num("seq") != 1 {
		t.Fatalf("got %v", m)
	}
	if a := alice.expect("ack"); a.str("ref") != "m-1" || a.num("seq") != 1 || a.str("room") != "lobby" {
		t.Fatalf("ack %v", a)
	}
	bob.expect("msg")

	// The page resends unacknowledged messages after a reconnect.
	alice.conn.Close()
	bob.await("presence")
	alice = connect(t, s.Addr(), "alice", "lobby")
	alice.send(msg)
	for {
		m := alice.expectAny()
		if m.str("type") == "ack" {
			if m.num("seq") != 1 {
				t.Fatalf("resend acked as seq %d, want the original 1", m.num("seq"))
			}
			break
		}
		if m.str("type") == "msg" && m.num("seq") != 1 {
			t.Fatalf("resend delivered again: %v", m)
		}
	}
	bob.expect("presence") // alice is back
	bob.expectNothing(200 * time.Millisecond)
}

func TestHistoryRequestPages(t *testing.T) {
	s := startServer(t, Config{})
	c := connect(t, s.Addr(), "alice", "lobby")
	for i := range 30 {
		c.send(fmt.Sprintf(`{"type":"msg","room":"lobby","text":"m%d"}`, i))
		c.expect("msg")
	}
	c.send(`{"type":"history","room":"lobby","before":21,"limit":10,"id":"h"}`)
	h := c.expect("history")
	msgs, _ := h["messages"].([]any)
	if len(msgs) != 10 || h["more"] != true || h.str("ref") != "h" {
		t.Fatalf("history %v", h)
	}
	first := msg(msgs[0].(map[string]any))
	if first.num("seq") != 11 || first.str("text") != "m10" || first.str("type") != "msg" {
		t.Fatalf("first message %v, want seq 11", first)
	}
	c.send(`{"type":"history","room":"other"}`)
	if e := c.expect("error"); e.str("code") != "not_member" {
		t.Fatalf("got %v", e)
	}
}

func TestBadSinceValuesGetClearErrors(t *testing.T) {
	s := startServer(t, Config{})
	c := connect(t, s.Addr(), "alice", "lobby")
	c.send(`{"type":"msg","room":"lobby","text":"x"}`)
	c.expect("msg")
	for _, req := range []string{
		`{"type":"join","room":"lobby","since":-1}`,
		`{"type":"join","room":"lobby","since":"5"}`,
		`{"type":"join","room":"lobby","since":1.5}`,
		`{"type":"join","room":"lobby","since":99}`,
		`{"type":"join","room":"fresh","since":3}`,
	} {
		c.send(req)
		if e := c.expect("error"); e.str("code") != "bad_request" || e.str("message") == "" {
			t.Fatalf("%s: got %v", req, e)
		}
	}
	for _, q := range []string{"-1", "x", "1e3"} {
		status, _ := handshake(t, s.Addr(), "/ws?name=bob&dm_since="+q, nil)
		if status != http.StatusBadRequest {
			t.Fatalf("dm_since=%s: status %d, want 400", q, status)
		}
	}
}

func TestDirectMessagesRecoverAfterReconnect(t *testing.T) {
	s := startServer(t, Config{})
	alice := connect(t, s.Addr(), "alice", "")
	bob := connect(t, s.Addr(), "bob", "")
	alice.send(`{"type":"dm","to":"bob","text":"one"}`)
	if m := bob.expect("dm"); m.num("seq") != 1 {
		t.Fatalf("got %v", m)
	}
	bob.conn.Close()
	time.Sleep(50 * time.Millisecond)
	alice.send(`{"type":"dm","to":"bob","text":"while away"}`)
	alice.expect("dm")
	alice.expect("dm")

	status, c := handshake(t, s.Addr(), "/ws?name=bob&dm_since=1", nil)
	if status != http.StatusSwitchingProtocols {
		t.Fatalf("status %d", status)
	}
	if w := c.expect("welcome"); w.num("dm_seq") != 2 {
		t.Fatalf("welcome %v, want dm_seq 2", w)
	}
	if m := c.expect("dm"); m.str("text") != "while away" || m.num("seq") != 2 {
		t.Fatalf("got %v", m)
	}
	c.expectNothing(100 * time.Millisecond)
}

// TestEvictedRoomRecoversOverTheWire: with a store, a room that stayed
// empty for RoomTTL leaves memory (nbchat_rooms drops to 0); a client that
// joins it later with since gets exactly what it missed, and numbering goes
// on from the stored seq.
func TestEvictedRoomRecoversOverTheWire(t *testing.T) {
	st, err := store.Open(t.TempDir(), 100, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() }) // after the server's shutdown
	s := startServer(t, Config{Room: room.Config{
		Store: st, HistorySize: 100, RoomTTL: 100 * time.Millisecond,
		PresenceInterval: 50 * time.Millisecond, SweepInterval: 50 * time.Millisecond,
	}})
	alice := connect(t, s.Addr(), "alice", "archive")
	for i := range 3 {
		alice.send(fmt.Sprintf(`{"type":"msg","room":"archive","text":"m%d"}`, i))
		if m := alice.await("msg"); m.num("seq") != int64(i+1) {
			t.Fatalf("got %v, want seq %d", m, i+1)
		}
	}
	_ = alice.conn.Close()
	waitFor(t, func() bool { return metricValue(t, s, "nbchat_rooms") == "0" })

	bob := connect(t, s.Addr(), "bob", "")
	bob.send(`{"type":"join","room":"archive","since":1,"id":"back"}`)
	if j := bob.expect("joined"); j["recovered"] != true || j.num("seq") != 3 {
		t.Fatalf("joined %v, want recovered:true seq 3", j)
	}
	for want := int64(2); want <= 3; want++ {
		if m := bob.expect("msg"); m.num("seq") != want || m.str("text") != fmt.Sprintf("m%d", want-1) {
			t.Fatalf("got %v, want seq %d", m, want)
		}
	}
	bob.send(`{"type":"msg","room":"archive","text":"after"}`)
	if m := bob.await("msg"); m.num("seq") != 4 {
		t.Fatalf("got %v, want seq 4 after the room came back", m)
	}
}
