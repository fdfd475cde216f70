package loop

import (
	"nbchat/room"
	"net/http"
	"testing"
	"time"
)

// TestNameProbeFreesADeadHoldersName: a client whose old socket went silent
// without closing (here: it reads nothing and answers nothing, as a peer
// behind a dead network path) comes back on a new socket. It gets 409 with
// Retry-After; the old socket is pinged and, unanswered, closed without a
// close handshake; asking again after Retry-After gets the name. Without the
// probe the name stays taken until the idle timeout (an hour here).
func TestNameProbeFreesADeadHoldersName(t *testing.T) {
	t.Parallel()
	s := startServer(t, Config{NameProbe: time.Second, PingInterval: time.Hour, IdleTimeout: 2 * time.Hour, Room: room.Config{Sessions: 1}})
	old := connect(t, s.Addr(), "alice", "lobby")

	resp, _ := handshakeResponse(t, s.Addr(), "/ws?name=alice&room=lobby", nil)
	if resp.StatusCode != http.StatusConflict || resp.Header.Get("Retry-After") != "2" {
		t.Fatalf("second connection: status %d, Retry-After %q; want 409, 2", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	asked := time.Now()
	if _, op, _, err := old.readFrame(3 * time.Second); err != nil || op != 0x9 {
		t.Fatalf("old socket: op %x, err %v; want a ping", op, err)
	}
	old.expectEOF(4 * time.Second)
	if d := time.Since(asked); d > 3*time.Second {
		t.Fatalf("old socket closed %v after the request, want within Retry-After (2s)", d)
	}
	back := connect(t, s.Addr(), "alice", "lobby")
	back.send(`{"type":"ping","id":1}`)
	back.expect("pong")
	if v := metricValue(t, s, `nbchat_closes_total{reason="unresponsive"}`); v != "1" {
		t.Fatalf("unresponsive closes = %q, want 1", v)
	}
	if v := metricValue(t, s, `nbchat_name_probes_total`); v != "1" {
		t.Fatalf("name probes = %q, want 1", v)
	}
}

// TestNameProbeKeepsALiveHoldersName: a holder that answers the ping keeps
// its name, however often someone else asks for it.
func TestNameProbeKeepsALiveHoldersName(t *testing.T) {
	t.Parallel()
	s := startServer(t, Config{NameProbe: time.Second, PingInterval: time.Hour, IdleTimeout: 2 * time.Hour, Room: room.Config{Sessions: 1}})
	bob := connect(t, s.Addr(), "bob", "")
	answered := make(chan int, 1)
	go func() {
		n, err := bob.answerPings(4 * time.Second)
		if err != nil {
			t.Errorf("bob: %v", err)
		}
		answered <- n
	}()
	for i := range 2 {
		if status, _ := handshake(t, s.Addr(), "/ws?name=bob", nil); status != http.StatusConflict {
			t.Fatalf("attempt %d: status %d, want 409", i, status)
		}
		time.Sleep(2500 * time.Millisecond) // past Retry-After: a dead holder would be gone
	}
	if n := <-answered; n < 1 {
		t.Fatalf("bob answered %d pings, want at least 1", n)
	}
	bob.send(`{"type":"ping","id":1}`)
	bob.expect("pong")
	if v := metricValue(t, s, `nbchat_closes_total{reason="unresponsive"}`); v != "" && v != "0" {
		t.Fatalf("unresponsive closes = %q, want none", v)
	}
}

// TestNameProbeOff: with the probe off a 409 has no Retry-After and the
// holder is not pinged.
func TestNameProbeOff(t *testing.T) {
	t.Parallel()
	s := startServer(t, Config{NameProbe: -1, PingInterval: time.Hour, IdleTimeout: 2 * time.Hour, Room: room.Config{Sessions: 1}})
	old := connect(t, s.Addr(), "carol", "")
	resp, _ := handshakeResponse(t, s.Addr(), "/ws?name=carol", nil)
	if resp.StatusCode != http.StatusConflict || resp.Header.Get("Retry-After") != "" {
		t.Fatalf("status %d, Retry-After %q; want 409 and none", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	old.expectNothing(2500 * time.Millisecond)
}
