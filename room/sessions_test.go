package room

import (
	"testing"
)

// probedFake is a fakeMember that counts the probes it is asked for.
type probedFake struct {
	*fakeMember
	probes int
}

func (m *probedFake) Probe() { m.probes++ }

// TestUserSessions: up to Config.Sessions connections hold one name; each
// attached one gets the user's direct messages, one not yet attached gets
// them in its replay; one more is refused, and every holder is probed
// whenever another connection asks for the name.
func TestUserSessions(t *testing.T) {
	h := newHub(t, Config{Sessions: 3})
	b := newFake("b")
	register(h, "b", b)
	tabs := []*probedFake{{fakeMember: newFake("a")}, {fakeMember: newFake("a")}, {fakeMember: newFake("a")}}
	for i, m := range tabs[:2] {
		if !register(h, "a", m) {
			t.Fatalf("connection %d refused", i+1)
		}
		m.events(t) // the welcome
	}
	if tabs[0].probes != 1 || tabs[1].probes != 0 {
		t.Fatalf("probes %d, %d after the second connection; want 1, 0", tabs[0].probes, tabs[1].probes)
	}
	// The third registers but is not attached yet: a DM now reaches the
	// first two, and the third in its replay.
	u, ok := h.Register("a", tabs[2])
	if !ok {
		t.Fatal("third connection refused")
	}
	if err := dm(h, b, []byte("a"), []byte("one")); err != nil {
		t.Fatal(err)
	}
	b.only(t) // the sender's copy
	for i, m := range tabs[:2] {
		if e := m.only(t); e.Type != "dm" || e.Text != "one" {
			t.Fatalf("connection %d got %+v", i+1, e)
		}
	}
	tabs[2].none(t)
	if err := u.Attach(tabs[2], 0); err != nil {
		t.Fatal(err)
	}
	if evs := tabs[2].events(t); len(evs) != 2 || evs[0].Type != "welcome" || evs[1].Text != "one" {
		t.Fatalf("third connection got %+v, want its welcome and the DM", evs)
	}
	// A fourth is one too many; all three are probed.
	fourth := &probedFake{fakeMember: newFake("a")}
	if register(h, "a", fourth) {
		t.Fatal("fourth connection accepted, want refused past Sessions")
	}
	if tabs[0].probes != 3 || tabs[1].probes != 2 || tabs[2].probes != 1 {
		t.Fatalf("probes %d, %d, %d; want 3, 2, 1", tabs[0].probes, tabs[1].probes, tabs[2].probes)
	}
	if err := u.Attach(fourth, -1); err != nil {
		t.Fatal(err)
	}
	fourth.none(t) // it holds nothing, so it gets nothing

	// Connections go in any order (the first, then the third); those
	// left keep the name and get its messages.
	for _, step := range []struct {
		gone int
		want [3]int
	}{{0, [3]int{0, 1, 1}}, {2, [3]int{0, 1, 0}}} {
		unregister(h, "a", tabs[step.gone])
		if err := dm(h, b, []byte("a"), []byte("again")); err != nil {
			t.Fatal(err)
		}
		b.only(t)
		for i, m := range tabs {
			if got := len(m.events(t)); got != step.want[i] {
				t.Fatalf("after connection %d left, connection %d got %d messages, want %d", step.gone+1, i+1, got, step.want[i])
			}
		}
	}
	if m, ok := h.Lookup([]byte("a")); !ok || m != tabs[1] {
		t.Fatalf("Lookup = %v, %v; want the last connection", m, ok)
	}
	unregister(h, "a", tabs[1])
	if _, ok := h.Lookup([]byte("a")); ok {
		t.Fatal("name still held after every connection left")
	}
	// The user's messages outlive its connections.
	if !register(h, "a", tabs[0]) {
		t.Fatal("name refused after every connection left")
	}
}

// TestRoomCountsUsersNotConnections: a user's second connection in a room
// is not a second member: others hear of its first join and its last
// leave only, and counts are of users.
func TestRoomCountsUsersNotConnections(t *testing.T) {
	h := newHub(t, Config{})
	b, a1, a2 := newFake("b"), newFake("a"), newFake("a")
	r := mustJoin(h, b, []byte("r"), nil)
	b.only(t)
	mustJoin(h, a1, []byte("r"), nil)
	if e := b.only(t); e.Type != "presence" || e.Event != "join" || e.Name != "a" || e.Count != 2 {
		t.Fatalf("b got %+v, want a's join", e)
	}
	a1.only(t)
	mustJoin(h, a2, []byte("r"), nil)
	if e := a2.only(t); e.Type != "joined" || e.Count != 2 || len(e.Members) != 2 {
		t.Fatalf("a's second connection got %+v, want joined with a and b", e)
	}
	b.none(t)
	a1.none(t)
	if n := r.Count(); n != 2 {
		t.Fatalf("Count = %d, want 2", n)
	}
	if err := publish(r, b, []byte("hi")); err != nil {
		t.Fatal(err)
	}
	for _, m := range []*fakeMember{a1, a2, b} {
		if e := m.only(t); e.Type != "msg" || e.Text != "hi" {
			t.Fatalf("%s got %+v", m.name, e)
		}
	}
	if !r.Leave(a1, nil) {
		t.Fatal("Leave of a's first connection failed")
	}
	a1.only(t) // left
	b.none(t)
	if n := r.Count(); n != 2 {
		t.Fatalf("Count after one of a's connections left = %d, want 2", n)
	}
	if err := publish(r, b, []byte("still")); err != nil {
		t.Fatal(err)
	}
	a2.only(t)
	b.only(t)
	a1.none(t)
	r.Drop(a2)
	if e := b.only(t); e.Type != "presence" || e.Event != "leave" || e.Name != "a" || e.Count != 1 {
		t.Fatalf("b got %+v, want a's leave", e)
	}
	// And back: a joins again as a new member.
	mustJoin(h, a1, []byte("r"), nil)
	if e := b.only(t); e.Event != "join" || e.Count != 2 {
		t.Fatalf("b got %+v, want a's join", e)
	}
}
