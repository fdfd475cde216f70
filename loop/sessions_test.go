package loop

import (
	"net/http"
	"testing"
	"time"

	"nbchat/room"
)

// TestUserOnTwoConnections: a second connection under a name (another tab)
// is the same user: both get its direct messages and the room's messages,
// the others see one member that joins once and leaves once, and past
// room.Config.Sessions a connection is refused with 409.
func TestUserOnTwoConnections(t *testing.T) {
	t.Parallel()
	s := startServer(t, Config{PingInterval: time.Hour, IdleTimeout: 2 * time.Hour, Room: room.Config{Sessions: 2}})
	tab1 := connect(t, s.Addr(), "alice", "lobby")
	bob := connect(t, s.Addr(), "bob", "lobby")
	tab1.await("presence")

	status, tab2 := handshake(t, s.Addr(), "/ws?name=alice&room=lobby", nil)
	if status != http.StatusSwitchingProtocols {
		t.Fatalf("second tab: status %d, want 101", status)
	}
	if m := tab2.expect("welcome"); m.str("name") != "alice" {
		t.Fatalf("second tab got %v", m)
	}
	if m := tab2.expect("joined"); m.num("count") != 2 {
		t.Fatalf("second tab: joined %v, want count 2 (alice, bob)", m)
	}
	// The first tab was asked to show it is alive; it is.
	tab1.send(`{"type":"ping","id":1}`)
	tab1.expect("pong")

	// A third connection is one too many; the two holders are pinged.
	if status, _ := handshake(t, s.Addr(), "/ws?name=alice", nil); status != http.StatusConflict {
		t.Fatalf("third connection: status %d, want 409", status)
	}

	bob.send(`{"type":"dm","to":"alice","text":"to both"}`)
	for _, c := range []*testClient{tab1, tab2} {
		if m := c.expect("dm"); m.str("text") != "to both" || m.str("from") != "bob" {
			t.Fatalf("alice got %v", m)
		}
	}
	bob.expect("dm") // the sender's copy

	tab2.send(`{"type":"msg","room":"lobby","text":"from tab 2","id":"m1"}`)
	for _, c := range []*testClient{tab1, tab2, bob} {
		if m := c.expect("msg"); m.str("text") != "from tab 2" || m.str("from") != "alice" || m.num("seq") != 1 {
			t.Fatalf("got %v", m)
		}
	}
	if m := tab2.expect("ack"); m.num("seq") != 1 {
		t.Fatalf("tab 2 got %v, want its ack", m)
	}

	// The first tab leaves: alice is still in the room, and bob hears
	// nothing.
	tab1.send(`{"type":"leave","room":"lobby"}`)
	tab1.expect("left")
	bob.expectNothing(300 * time.Millisecond)
	bob.send(`{"type":"members","room":"lobby","id":2}`)
	if m := bob.expect("members"); m.num("count") != 2 {
		t.Fatalf("members after one tab left: %v, want count 2", m)
	}
	bob.send(`{"type":"msg","room":"lobby","text":"still there?"}`)
	if m := tab2.expect("msg"); m.str("text") != "still there?" {
		t.Fatalf("tab 2 got %v", m)
	}
	bob.expect("msg")
	tab1.expectNothing(200 * time.Millisecond)

	// The second tab closes: now alice leaves, and the first tab still
	// gets her direct messages.
	tab2.conn.Close()
	if m := bob.expect("presence"); m.str("event") != "leave" || m.str("name") != "alice" || m.num("count") != 1 {
		t.Fatalf("bob got %v, want alice's leave", m)
	}
	bob.send(`{"type":"dm","to":"alice","text":"one left"}`)
	if m := tab1.expect("dm"); m.str("text") != "one left" {
		t.Fatalf("first tab got %v", m)
	}
}

// TestNameProbeClosesADeadSessionBesideANewOne: a client back on a new
// socket while its old one is dead but not closed gets in at once, and the
// old socket, pinged and silent, is closed.
func TestNameProbeClosesADeadSessionBesideANewOne(t *testing.T) {
	t.Parallel()
	s := startServer(t, Config{NameProbe: time.Second, PingInterval: time.Hour, IdleTimeout: 2 * time.Hour})
	old := connect(t, s.Addr(), "dave", "lobby")
	back := connect(t, s.Addr(), "dave", "lobby")
	asked := time.Now()
	if _, op, _, err := old.readFrame(3 * time.Second); err != nil || op != 0x9 {
		t.Fatalf("old socket: op %x, err %v; want a ping", op, err)
	}
	old.expectEOF(4 * time.Second)
	if d := time.Since(asked); d > 3*time.Second {
		t.Fatalf("old socket closed %v after the new one came, want within about 2 s", d)
	}
	back.send(`{"type":"msg","room":"lobby","text":"back"}`)
	if m := back.expect("msg"); m.str("text") != "back" {
		t.Fatalf("got %v", m)
	}
	if v := metricValue(t, s, `nbchat_closes_total{reason="unresponsive"}`); v != "1" {
		t.Fatalf("unresponsive closes = %q, want 1", v)
	}
}

// TestDMSentAgainIsAcknowledged: a direct message sent again with the same
// id (a resend after a reconnect, or from another tab of the user) is
// acknowledged and not delivered twice; another id, or no id, is a new
// message.
func TestDMSentAgainIsAcknowledged(t *testing.T) {
	t.Parallel()
	s := startServer(t, Config{PingInterval: time.Hour, IdleTimeout: 2 * time.Hour})
	tab1 := connect(t, s.Addr(), "alice", "")
	tab2 := connect(t, s.Addr(), "alice", "")
	bob := connect(t, s.Addr(), "bob", "")
	tab1.send(`{"type":"dm","to":"bob","text":"once","id":"d1"}`)
	if m := bob.expect("dm"); m.str("text") != "once" || m.num("seq") != 1 {
		t.Fatalf("bob got %v", m)
	}
	for _, c := range []*testClient{tab1, tab2} {
		if m := c.expect("dm"); m.str("text") != "once" {
			t.Fatalf("alice got %v, want her copy", m)
		}
	}
	tab2.send(`{"type":"dm","to":"bob","text":"once","id":"d1"}`)
	if m := tab2.expect("ack"); m.str("to") != "bob" || m.str("ref") != "d1" {
		t.Fatalf("tab 2 got %v, want an ack for d1", m)
	}
	tab1.send(`{"type":"dm","to":"bob","text":"twice","id":"d2"}`)
	if m := bob.expect("dm"); m.str("text") != "twice" || m.num("seq") != 2 {
		t.Fatalf("bob got %v, want the next message, not the resend", m)
	}
	bob.expectNothing(200 * time.Millisecond)
}
