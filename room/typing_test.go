package room

import "testing"

// TestTyping: a typing notice reaches the room's other members at once,
// none of the typist's own connections, nothing in a room past
// PresenceLimit users, and a DM's notice reaches the other user's
// connections only.
func TestTyping(t *testing.T) {
	h := newHub(t, Config{PresenceLimit: 3})
	a1, a2, b, c := newFake("a"), newFake("a"), newFake("b"), newFake("c")
	for _, m := range []*fakeMember{a1, a2, b, c} {
		register(h, m.name, m)
	}
	var r *Room
	for _, m := range []*fakeMember{a1, a2, b, c} {
		r = mustJoin(h, m, []byte("r"), nil)
	}
	for _, m := range []*fakeMember{a1, a2, b, c} {
		m.events(t) // joined replies and presence
	}
	if err := r.Typing(a2); err != nil {
		t.Fatal(err)
	}
	for _, m := range []*fakeMember{b, c} {
		if e := m.only(t); e.Type != "typing" || e.Room != "r" || e.From != "a" || e.To != "" {
			t.Fatalf("%s got %+v, want a's typing in r", m.name, e)
		}
	}
	a1.none(t)
	a2.none(t)
	if err := r.Typing(newFake("x")); err == nil || err.Code != "not_member" {
		t.Fatalf("typing from outside the room: %v, want not_member", err)
	}

	// A direct message's notice: to the other user's connections.
	h.TypingTo(h.user([]byte("b")), []byte("a"))
	for _, m := range []*fakeMember{a1, a2} {
		if e := m.only(t); e.Type != "typing" || e.From != "b" || e.To != "a" || e.Room != "" {
			t.Fatalf("%s got %+v, want b's typing to a", m.name, e)
		}
	}
	b.none(t)
	h.TypingTo(h.user([]byte("b")), []byte("b"))
	h.TypingTo(h.user([]byte("b")), []byte("nobody"))
	b.none(t)

	// One more user makes the room too big for typing notices.
	d := newFake("d")
	mustJoin(h, d, []byte("r"), nil)
	for _, m := range []*fakeMember{a1, a2, b, c, d} {
		m.events(t)
	}
	if err := r.Typing(b); err != nil {
		t.Fatal(err)
	}
	for _, m := range []*fakeMember{a1, a2, c, d} {
		m.none(t)
	}
}
