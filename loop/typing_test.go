package loop

import (
	"testing"
	"time"
)

// TestTypingOverTheWire: typing in a room reaches the other members and
// not the typist; typing to a user reaches that user; typing in a room one
// is not in is an error.
func TestTypingOverTheWire(t *testing.T) {
	t.Parallel()
	s := startServer(t, Config{})
	alice := connect(t, s.Addr(), "alice", "lobby")
	bob := connect(t, s.Addr(), "bob", "lobby")
	alice.await("presence")

	alice.send(`{"type":"typing","room":"lobby"}`)
	if m := bob.expect("typing"); m.str("room") != "lobby" || m.str("from") != "alice" {
		t.Fatalf("bob got %v", m)
	}
	bob.send(`{"type":"typing","to":"alice"}`)
	if m := alice.expect("typing"); m.str("from") != "bob" || m.str("to") != "alice" || m.str("room") != "" {
		t.Fatalf("alice got %v", m)
	}
	alice.send(`{"type":"typing","room":"elsewhere","id":7}`)
	if m := alice.expect("error"); m.str("code") != "not_member" || m.num("ref") != 7 {
		t.Fatalf("alice got %v", m)
	}
	alice.send(`{"type":"typing","room":"lobby","to":"bob","id":8}`)
	if m := alice.expect("error"); m.str("code") != "bad_request" || m.num("ref") != 8 {
		t.Fatalf("alice got %v", m)
	}
	bob.expectNothing(200 * time.Millisecond)
}
