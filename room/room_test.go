package room

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"nbchat/protocol"
)

func TestNewConfig(t *testing.T) {
	for _, shards := range []int{-1, 3, 12} {
		if _, err := New(Config{Shards: shards}); err == nil {
			t.Errorf("New(Shards: %d) = nil error, want one", shards)
		}
	}
	h := newHub(t, Config{})
	want := Config{Shards: 64, PresenceLimit: 200, PresenceInterval: time.Second, PresenceNames: 50, JoinedNames: 200}
	if got := h.cfg; got.Shards != want.Shards || got.PresenceLimit != want.PresenceLimit ||
		got.PresenceInterval != want.PresenceInterval || got.PresenceNames != want.PresenceNames ||
		got.JoinedNames != want.JoinedNames {
		t.Errorf("defaults = %+v, want %+v", got, want)
	}
}

func TestJoin(t *testing.T) {
	h := newHub(t, Config{})
	carol, alice, bob := newFake("carol"), newFake("alice"), newFake("bob")

	r := mustJoin(h, carol, []byte("lobby"), []byte(`"c1"`))
	ev := carol.only(t)
	if ev.Type != "joined" || ev.Room != "lobby" || ev.Count != 1 || !slices.Equal(ev.Members, []string{"carol"}) ||
		ev.Seq != 0 || string(ev.Ref) != `"c1"` {
		t.Fatalf("first join: got %+v", ev)
	}
	if err := publish(r, carol, []byte("hi")); err != nil {
		t.Fatal(err)
	}
	carol.events(t)

	tests := []struct {
		m       *fakeMember
		ref     string
		count   int
		members []string
		others  []*fakeMember
	}{
		{alice, `7`, 2, []string{"alice", "carol"}, []*fakeMember{carol}},
		{bob, ``, 3, []string{"alice", "bob", "carol"}, []*fakeMember{carol, alice}},
	}
	for _, tt := range tests {
		var ref []byte
		if tt.ref != "" {
			ref = []byte(tt.ref)
		}
		if got := mustJoin(h, tt.m, []byte("lobby"), ref); got != r {
			t.Fatalf("%s joined room %p, want %p", tt.m.name, got, r)
		}
		ev := tt.m.only(t)
		if ev.Type != "joined" || ev.Room != "lobby" || ev.Count != tt.count || !slices.Equal(ev.Members, tt.members) ||
			ev.Seq != 1 || string(ev.Ref) != tt.ref {
			t.Errorf("%s: joined = %+v, want count %d members %v seq 1 ref %s", tt.m.name, ev, tt.count, tt.members, tt.ref)
		}
		for _, o := range tt.others {
			ev := o.only(t)
			if ev.Type != "presence" || ev.Room != "lobby" || ev.Event != "join" || ev.Name != tt.m.name || ev.Count != tt.count {
				t.Errorf("%s saw %+v, want presence join of %s count %d", o.name, ev, tt.m.name, tt.count)
			}
		}
	}

	// Joining again answers joined and changes nothing.
	if got := mustJoin(h, alice, []byte("lobby"), []byte(`"again"`)); got != r {
		t.Fatalf("second join returned another room")
	}
	ev = alice.only(t)
	if ev.Type != "joined" || ev.Count != 3 || !slices.Equal(ev.Members, []string{"alice", "bob", "carol"}) || string(ev.Ref) != `"again"` {
		t.Errorf("second join: got %+v", ev)
	}
	bob.none(t)
	carol.none(t)
	if r.Count() != 3 || r.Name() != "lobby" {
		t.Errorf("Count, Name = %d, %q; want 3, lobby", r.Count(), r.Name())
	}
}

func TestLeave(t *testing.T) {
	h := newHub(t, Config{})
	a, b, c := newFake("a"), newFake("b"), newFake("c")
	r := mustJoin(h, a, []byte("x"), nil)
	mustJoin(h, b, []byte("x"), nil)
	mustJoin(h, c, []byte("x"), nil)
	a.events(t)
	b.events(t)
	c.events(t)

	if !r.Leave(b, []byte(`"l"`)) {
		t.Fatal("Leave of a member reported false")
	}
	if ev := b.only(t); ev.Type != "left" || ev.Room != "x" || string(ev.Ref) != `"l"` {
		t.Errorf("leaver got %+v", ev)
	}
	for _, o := range []*fakeMember{a, c} {
		if ev := o.only(t); ev.Type != "presence" || ev.Event != "leave" || ev.Name != "b" || ev.Count != 2 {
			t.Errorf("%s got %+v, want presence leave of b count 2", o.name, ev)
		}
	}
	if r.Leave(b, nil) {
		t.Error("second Leave reported true")
	}
	if r.Leave(newFake("stranger"), nil) {
		t.Error("Leave of a non-member reported true")
	}
	b.none(t)
	a.none(t)

	// Drop removes without a reply.
	r.Drop(c)
	c.none(t)
	if ev := a.only(t); ev.Event != "leave" || ev.Name != "c" || ev.Count != 1 {
		t.Errorf("a got %+v, want presence leave of c count 1", ev)
	}
	if r.Count() != 1 {
		t.Errorf("Count = %d, want 1", r.Count())
	}
}

func TestPublish(t *testing.T) {
	h := newHub(t, Config{})
	ms := []*fakeMember{newFake("a"), newFake("b"), newFake("c")}
	var r *Room
	for _, m := range ms {
		r = mustJoin(h, m, []byte("pub"), nil)
	}
	for _, m := range ms {
		m.events(t)
	}

	stranger := newFake("z")
	if err := publish(r, stranger, []byte("hi")); err == nil || err.Code != protocol.CodeNotMember {
		t.Fatalf("Publish from a non-member = %v, want %s", err, protocol.CodeNotMember)
	}
	stranger.none(t)

	const n = 10
	before := h.Stats()
	for i := range n {
		from := ms[i%len(ms)]
		if err := publish(r, from, fmt.Appendf(nil, "m%d \"q\"", i)); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range ms {
		evs := m.events(t)
		if len(evs) != n {
			t.Fatalf("%s got %d messages, want %d", m.name, len(evs), n)
		}
		for i, ev := range evs {
			want := fmt.Sprintf("m%d \"q\"", i)
			if ev.Type != "msg" || ev.Room != "pub" || ev.From != ms[i%len(ms)].name || ev.Text != want ||
				ev.Seq != uint64(i+1) || ev.TS == 0 {
				t.Errorf("%s message %d = %+v, want text %q seq %d", m.name, i, ev, want, i+1)
			}
		}
	}
	after := h.Stats()
	if got := after.Messages - before.Messages; got != n {
		t.Errorf("Stats().Messages grew by %d, want %d", got, n)
	}
	if got := after.Deliveries - before.Deliveries; got != n*uint64(len(ms)) {
		t.Errorf("Stats().Deliveries grew by %d, want %d", got, n*len(ms))
	}
}

func TestRoomEmptiesAndComesBack(t *testing.T) {
	var recipients atomic.Int64
	h := newHub(t, Config{OnBroadcast: func(n int, d time.Duration) { recipients.Add(int64(n)) }})
	a, b := newFake("a"), newFake("b")
	mustJoin(h, newFake("other"), []byte("other"), nil)
	r := mustJoin(h, a, []byte("r"), nil)
	mustJoin(h, b, []byte("r"), nil)
	if h.Find([]byte("r")) != r {
		t.Fatal("Find did not return the room")
	}
	if got := h.Stats().Rooms; got != 2 {
		t.Fatalf("Stats().Rooms = %d, want 2", got)
	}
	publish(r, a, []byte("1"))
	publish(r, a, []byte("2"))
	if recipients.Load() != 4 {
		t.Errorf("OnBroadcast saw %d recipients, want 4", recipients.Load())
	}

	r.Leave(a, nil)
	r.Leave(b, nil)
	if got := h.Find([]byte("r")); got != nil {
		t.Fatal("Find returned an empty room")
	}
	if got := h.Stats().Rooms; got != 1 {
		t.Fatalf("Stats().Rooms = %d after the room emptied, want 1", got)
	}
	a.events(t)
	b.events(t)

	r2 := mustJoin(h, b, []byte("r"), nil)
	if r2 == r {
		t.Fatal("join after the room emptied reused the old room")
	}
	if ev := b.only(t); ev.Count != 1 || ev.Seq != 0 || !slices.Equal(ev.Members, []string{"b"}) {
		t.Errorf("joined the new room: %+v", ev)
	}
	if got := h.Stats().Rooms; got != 2 {
		t.Fatalf("Stats().Rooms = %d, want 2", got)
	}
	if err := publish(r, b, []byte("old")); err == nil {
		t.Error("Publish into the emptied room succeeded")
	}
	publish(r2, b, []byte("new"))
	if ev := b.only(t); ev.Seq != 1 || ev.Text != "new" {
		t.Errorf("first message in the new room: %+v, want seq 1", ev)
	}
}

func TestMembersPaging(t *testing.T) {
	h := newHub(t, Config{})
	const n = 250
	perm := make([]int, n)
	for i := range perm {
		perm[i] = (i * 97) % n // join out of name order
	}
	var r *Room
	for _, i := range perm {
		r = mustJoin(h, &countMember{name: userName(i)}, []byte("big"), nil)
	}
	asker := newFake("asker")

	var got []string
	var after []byte
	for pages := 0; ; pages++ {
		if pages > n/100+1 {
			t.Fatal("paging does not end")
		}
		r.Members(asker, after, 100, []byte(`"p"`))
		ev := asker.only(t)
		if ev.Type != "members" || ev.Room != "big" || ev.Count != n || string(ev.Ref) != `"p"` {
			t.Fatalf("members reply %+v", ev)
		}
		if len(ev.Members) > 100 {
			t.Fatalf("page of %d names, limit 100", len(ev.Members))
		}
		if len(ev.Members) == 0 {
			break
		}
		got = append(got, ev.Members...)
		after = []byte(ev.Members[len(ev.Members)-1])
	}
	if len(got) != n {
		t.Fatalf("walked %d names, want %d", len(got), n)
	}
	for i, name := range got {
		if name != userName(i) {
			t.Fatalf("name %d = %s, want %s (every name once, in order)", i, name, userName(i))
		}
	}

	tests := []struct {
		after string
		limit int
		want  []string
	}{
		{"", 3, []string{userName(0), userName(1), userName(2)}},
		{userName(10), 2, []string{userName(11), userName(12)}},
		{userName(10) + "x", 1, []string{userName(11)}}, // not a member: starts after it
		{"a", 1, []string{userName(0)}},
		{userName(248), 100, []string{userName(249)}},
		{userName(249), 100, nil},
		{"zzz", 5, nil},
		{"", 0, nil},
	}
	for _, tt := range tests {
		var after []byte
		if tt.after != "" {
			after = []byte(tt.after)
		}
		r.Members(asker, after, tt.limit, nil)
		if ev := asker.only(t); !slices.Equal(ev.Members, tt.want) {
			t.Errorf("Members(after %q, limit %d) = %v, want %v", tt.after, tt.limit, ev.Members, tt.want)
		}
	}
}

func TestJoinedBigRoom(t *testing.T) {
	h := newHub(t, Config{JoinedNames: 10})
	fill(h, "big", 49)
	m := newFake(userName(49))
	mustJoin(h, m, []byte("big"), nil)
	ev := m.only(t)
	want := make([]string, 10)
	for i := range want {
		want[i] = userName(i)
	}
	if ev.Type != "joined" || ev.Count != 50 || !slices.Equal(ev.Members, want) {
		t.Errorf("joined = %+v, want count 50 and members %v", ev, want)
	}
}

func TestRooms(t *testing.T) {
	h := newHub(t, Config{})
	sizes := map[string]int{"one": 1, "five": 5, "three": 3, "also3": 3, "ten": 10}
	for name, n := range sizes {
		fill(h, name, n)
	}
	asker := newFake("asker")
	h.Rooms(asker, []byte(`"r"`))
	ev := asker.only(t)
	if ev.Type != "rooms" || string(ev.Ref) != `"r"` {
		t.Fatalf("rooms reply %+v", ev)
	}
	want := []string{"ten", "five", "also3", "three", "one"}
	if len(ev.Rooms) != len(want) {
		t.Fatalf("got %d rooms, want %d: %+v", len(ev.Rooms), len(want), ev.Rooms)
	}
	for i, rc := range ev.Rooms {
		if rc.Name != want[i] || rc.Count != sizes[want[i]] {
			t.Errorf("room %d = %+v, want %s with %d", i, rc, want[i], sizes[want[i]])
		}
	}
}

func TestRoomsListCapped(t *testing.T) {
	h := newHub(t, Config{})
	for i := range maxRoomsListed + 20 {
		fill(h, fmt.Sprintf("r%03d", i), 1+i%3)
	}
	asker := newFake("asker")
	h.Rooms(asker, nil)
	ev := asker.only(t)
	if len(ev.Rooms) != maxRoomsListed {
		t.Fatalf("got %d rooms, want %d", len(ev.Rooms), maxRoomsListed)
	}
	if !slices.IsSortedFunc(ev.Rooms, func(a, b struct {
		Name  string `json:"name"`
		Count int    `json:"count"`
	}) int {
		return b.Count - a.Count
	}) {
		t.Errorf("rooms not busiest first: %+v", ev.Rooms)
	}
}

func TestDM(t *testing.T) {
	h := newHub(t, Config{})
	alice, bob := newFake("alice"), newFake("bob")
	for _, m := range []*fakeMember{alice, bob} {
		if !register(h, m.name, m) {
			t.Fatalf("Register(%s) failed", m.name)
		}
	}

	if err := dm(h, alice, []byte("bob"), []byte("hi\nbob")); err != nil {
		t.Fatal(err)
	}
	for _, m := range []*fakeMember{bob, alice} {
		if ev := m.only(t); ev.Type != "dm" || ev.From != "alice" || ev.To != "bob" || ev.Text != "hi\nbob" || ev.TS == 0 {
			t.Errorf("%s got %+v", m.name, ev)
		}
	}

	if err := dm(h, alice, []byte("alice"), []byte("note")); err != nil {
		t.Fatal(err)
	}
	if ev := alice.only(t); ev.From != "alice" || ev.To != "alice" || ev.Text != "note" {
		t.Errorf("DM to oneself: %+v", ev)
	}
	bob.none(t)

	if err := dm(h, alice, []byte("nobody"), []byte("x")); err == nil || err.Code != protocol.CodeNoSuchUser {
		t.Errorf("DM to an unknown name = %v, want %s", err, protocol.CodeNoSuchUser)
	}
	alice.none(t)
	if s := h.Stats(); s.Messages != 2 || s.Deliveries != 3 {
		t.Errorf("Stats = %+v, want 2 messages and 3 deliveries", s)
	}
}

func TestRegister(t *testing.T) {
	h := newHub(t, Config{Sessions: 1})
	a, a2 := newFake("a"), newFake("a")
	if !register(h, "a", a) {
		t.Fatal("Register of a free name failed")
	}
	if register(h, "a", a2) {
		t.Fatal("Register of a taken name succeeded")
	}
	if register(h, "a", a) {
		t.Fatal("Register of a name one already holds succeeded")
	}
	unregister(h, "a", a2) // a2 does not hold it
	if m, ok := h.Lookup([]byte("a")); !ok || m != a {
		t.Fatalf("Lookup after Unregister by a non-holder = %v, %v; want a", m, ok)
	}
	unregister(h, "a", a)
	if _, ok := h.Lookup([]byte("a")); ok {
		t.Fatal("name still held after its holder unregistered")
	}
	if !register(h, "a", a2) {
		t.Fatal("Register after release failed")
	}
	if m, _ := h.Lookup([]byte("a")); m != a2 {
		t.Fatal("Lookup does not return the new holder")
	}
}

// TestPresenceCoalesced checks that a join storm into a big room costs each
// member about one presence message per interval.
func TestPresenceCoalesced(t *testing.T) {
	const (
		joins    = 2000
		limit    = 5
		names    = 8
		interval = 20 * time.Millisecond
	)
	var flushes atomic.Int64
	h := newHub(t, Config{
		PresenceLimit: limit, PresenceInterval: interval, PresenceNames: names, JoinedNames: 20,
		OnBroadcast: func(int, time.Duration) { flushes.Add(1) },
	})
	ms := make([]*fakeMember, joins)
	start := time.Now()
	var r *Room
	for i := range ms {
		ms[i] = newFake(userName(i))
		r = mustJoin(h, ms[i], []byte("storm"), nil)
	}
	joinedBy := flushes.Load()
	elapsed := time.Since(start)
	// Wait for the flush that reports the final count.
	deadline := time.Now().Add(10 * time.Second)
	for flushes.Load() == joinedBy {
		if time.Now().After(deadline) {
			t.Fatal("no coalesced presence after the joins")
		}
		time.Sleep(interval / 4)
	}
	h.Close()
	if r.Count() != joins {
		t.Fatalf("Count = %d, want %d", r.Count(), joins)
	}

	total := 0
	for i, m := range ms {
		var presence []event
		for _, ev := range m.events(t) {
			if ev.Type == "presence" {
				presence = append(presence, ev)
			}
		}
		total += len(presence)
		if i < limit {
			// The first joins are told at once, one by one.
			for j, ev := range presence[:limit-1-i] {
				if ev.Event != "join" || ev.Name != userName(i+1+j) {
					t.Fatalf("%s presence %d = %+v, want join of %s", m.name, j, ev, userName(i+1+j))
				}
			}
			presence = presence[limit-1-i:]
		}
		if n := int64(len(presence)); n > flushes.Load() {
			t.Fatalf("%s got %d coalesced presence messages in %d flushes", m.name, n, flushes.Load())
		}
		for _, ev := range presence {
			if ev.Event != "" || len(ev.Joined) == 0 || len(ev.Joined) > names || len(ev.Left) != 0 {
				t.Fatalf("%s got presence %+v, want a batch of 1 to %d joined names", m.name, ev, names)
			}
		}
		if len(presence) == 0 || presence[len(presence)-1].Count != joins {
			t.Fatalf("%s: last presence %+v, want count %d", m.name, presence, joins)
		}
	}
	if total >= 20*joins {
		t.Errorf("%d presence deliveries for %d joins into one room, want far fewer than joins×members", total, joins)
	}
	// The ticker cannot fire more often than once per interval.
	if most := int64(time.Since(start)/interval) + 2; flushes.Load() > most {
		t.Errorf("%d flushes in %v, want at most %d", flushes.Load(), elapsed, most)
	}
	t.Logf("%d joins in %v: %d flushes, %d presence deliveries", joins, elapsed, flushes.Load(), total)
}

// TestPresenceCoalescedLeaves checks that leaves are coalesced like joins.
func TestPresenceCoalescedLeaves(t *testing.T) {
	h := newHub(t, Config{PresenceLimit: 5, PresenceInterval: 10 * time.Millisecond, PresenceNames: 3})
	r, ms := fill(h, "room", 20)
	watcher := newFake("watcher")
	mustJoin(h, watcher, []byte("room"), nil)
	waitFlushed(t, r)
	watcher.events(t)

	for _, m := range ms[:10] {
		r.Drop(m)
	}
	waitFlushed(t, r)
	evs := watcher.events(t)
	if len(evs) == 0 || len(evs) > 10 {
		t.Fatalf("watcher got %d presence messages for 10 leaves", len(evs))
	}
	for _, ev := range evs {
		if ev.Type != "presence" || ev.Event != "" || len(ev.Left) == 0 || len(ev.Left) > 3 || len(ev.Joined) != 0 {
			t.Fatalf("watcher got %+v, want batches of 1 to 3 left names", ev)
		}
	}
	if last := evs[len(evs)-1]; last.Count != 11 {
		t.Errorf("last presence count = %d, want 11", last.Count)
	}
}

// waitFlushed waits until r has no coalesced presence waiting.
func waitFlushed(t testing.TB, r *Room) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		r.mu.Lock()
		queued := r.presenceQueued
		r.mu.Unlock()
		if !queued {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("coalesced presence never sent")
		}
		time.Sleep(time.Millisecond)
	}
}

// TestJoinStorm joins 20,000 members into one room. Only completion and the
// delivery count are checked, not timing.
func TestJoinStorm(t *testing.T) {
	const joins = 20000
	const interval = 20 * time.Millisecond
	var flushes, recipients atomic.Int64
	h := newHub(t, Config{
		PresenceLimit: 5, PresenceInterval: interval, JoinedNames: 20,
		OnBroadcast: func(n int, _ time.Duration) { flushes.Add(1); recipients.Add(int64(n)) },
	})
	start := time.Now()
	r, ms := fill(h, "storm", joins)
	h.Close()
	elapsed := time.Since(start)
	if r.Count() != joins {
		t.Fatalf("Count = %d, want %d", r.Count(), joins)
	}
	s := h.Stats()
	// Four small-room presence events go to 1+2+3+4 members; everything
	// else is coalesced batches, one delivery per member per flush.
	if want := uint64(recipients.Load()) + 10; s.Deliveries != want {
		t.Errorf("Deliveries = %d, want %d", s.Deliveries, want)
	}
	if ticks := int64(elapsed/interval) + 2; flushes.Load() > ticks {
		t.Errorf("%d flushes in %v, want at most %d", flushes.Load(), elapsed, ticks)
	}
	if most := uint64(flushes.Load())*joins + 10; s.Deliveries > most {
		t.Errorf("Deliveries = %d, want at most members×flushes = %d", s.Deliveries, most)
	}
	var got int64
	for _, m := range ms {
		got += m.n.Load()
	}
	if want := int64(s.Deliveries) + joins; got != want {
		t.Errorf("members received %d frames, want %d deliveries + %d joined replies", got, s.Deliveries, joins)
	}
	t.Logf("%d joins in %v: %d flushes, %d deliveries", joins, elapsed, flushes.Load(), s.Deliveries)
}

// TestPublishOrderUnderChurn publishes from many goroutines while others
// join and leave: every member that stays sees every seq once, in order.
func TestPublishOrderUnderChurn(t *testing.T) {
	const (
		stayers    = 4
		publishers = 6
		perPub     = 200
		churners   = 6
		churns     = 150
	)
	h := newHub(t, Config{})
	name := []byte("busy")
	var watchers []*fakeMember
	for i := range stayers + publishers {
		m := newFake(fmt.Sprintf("s%d", i))
		mustJoin(h, m, name, nil)
		watchers = append(watchers, m)
	}
	var wg sync.WaitGroup
	for i := range publishers {
		m := watchers[stayers+i]
		wg.Go(func() {
			r := h.Find(name)
			for j := range perPub {
				if err := publish(r, m, fmt.Appendf(nil, "%s/%d", m.name, j)); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	for i := range churners {
		m := newFake(fmt.Sprintf("c%d", i))
		wg.Go(func() {
			for j := range churns {
				r := mustJoin(h, m, name, nil)
				if j%2 == 0 {
					publish(r, m, []byte("churn"))
				}
				if !r.Leave(m, nil) {
					t.Errorf("%s: Leave after Join reported false", m.name)
					return
				}
			}
		})
	}
	wg.Wait()

	const total = publishers*perPub + churners*churns/2
	for _, w := range watchers {
		var seqs []uint64
		next := make(map[string]int) // per publisher, the next message
		for _, ev := range w.events(t) {
			if ev.Type != "msg" {
				continue
			}
			seqs = append(seqs, ev.Seq)
			if ev.Text == "churn" {
				continue
			}
			if want := fmt.Sprintf("%s/%d", ev.From, next[ev.From]); ev.Text != want {
				t.Fatalf("%s: got %q from %s, want %q", w.name, ev.Text, ev.From, want)
			}
			next[ev.From]++
		}
		if len(seqs) != total {
			t.Errorf("%s saw %d messages, want %d", w.name, len(seqs), total)
		}
		for i, s := range seqs {
			if s != uint64(i+1) {
				t.Fatalf("%s: message %d has seq %d, want %d (gap or duplicate)", w.name, i, s, i+1)
			}
		}
	}
}

// TestJoinLeaveSameRoom joins and leaves one room name from many goroutines
// so that it keeps emptying and coming back: a member whose Join returned is
// always in the room Join returned.
func TestJoinLeaveSameRoom(t *testing.T) {
	const (
		workers = 8
		rounds  = 300
	)
	h := newHub(t, Config{Shards: 1})
	name := []byte("flicker")
	var wg sync.WaitGroup
	for i := range workers {
		wg.Go(func() {
			m := newFake(fmt.Sprintf("w%d", i))
			probe := newFake("probe")
			for j := range rounds {
				r := mustJoin(h, m, name, nil)
				if j%4 == 0 {
					r.Members(probe, nil, 100, nil)
					if ev := probe.only(t); !slices.Contains(ev.Members, m.name) {
						t.Errorf("%s joined %s but its members are %v", m.name, name, ev.Members)
						return
					}
				}
				if !r.Leave(m, nil) {
					t.Errorf("%s: Leave of the room Join returned reported false", m.name)
					return
				}
				m.events(t)
			}
		})
	}
	wg.Wait()
	if r := h.Find(name); r != nil {
		t.Errorf("Find after everyone left = room with %d members", r.Count())
	}
	if got := h.Stats().Rooms; got != 0 {
		t.Errorf("Stats().Rooms = %d after every room emptied, want 0", got)
	}
}

// TestStatsRoomsRejoinWhileEmptying is a regression test: a join that
// replaced a room which had emptied but was not yet removed from its shard
// counted a new room, and the removal then counted none, so Stats().Rooms
// crept up under join/leave churn of one name.
func TestStatsRoomsRejoinWhileEmptying(t *testing.T) {
	h := newHub(t, Config{Shards: 1})
	name := []byte("churn")
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			m := &countMember{name: userName(i)}
			for range 3000 {
				mustJoin(h, m, name, nil).Leave(m, nil)
			}
		})
	}
	wg.Wait()
	if got := h.Stats().Rooms; got != 0 {
		t.Errorf("Stats().Rooms = %d after every room emptied, want 0", got)
	}
}

// TestHubSharding checks that names spread over every shard.
func TestHubSharding(t *testing.T) {
	const shards = 16
	h := newHub(t, Config{Shards: shards})
	for i := range 50 * shards {
		name := fmt.Sprintf("room-%d", i)
		mustJoin(h, &countMember{name: "m"}, []byte(name), nil)
		register(h, userName(i), &countMember{name: userName(i)})
	}
	for i := range h.rooms {
		if n := len(h.rooms[i].rooms); n == 0 {
			t.Errorf("room shard %d is empty", i)
		}
		if n := len(h.users[i].users); n == 0 {
			t.Errorf("user shard %d is empty", i)
		}
	}
	if r := h.Find([]byte("room-7")); r == nil || r.shard != &h.rooms[fnv32a("room-7")&h.mask] {
		t.Error("room-7 is not in its hash's shard")
	}
}

// TestPresenceBurstInSmallRoom checks that a small room sends its first
// joins of a tick one by one and coalesces the rest of a storm.
func TestPresenceBurstInSmallRoom(t *testing.T) {
	const joins = 20
	h := newHub(t, Config{PresenceBurst: 3, PresenceInterval: 200 * time.Millisecond})
	watcher := newFake("watcher")
	r := mustJoin(h, watcher, []byte("small"), nil)
	watcher.events(t)
	for i := range joins {
		mustJoin(h, &countMember{name: userName(i)}, []byte("small"), nil)
	}
	waitFlushed(t, r)
	evs := watcher.events(t)
	seen := map[string]bool{}
	var single int
	for _, ev := range evs {
		if ev.Type != "presence" {
			t.Fatalf("watcher got %+v", ev)
		}
		if ev.Event != "" {
			single++
			seen[ev.Name] = true
			continue
		}
		if len(ev.Left) != 0 {
			t.Fatalf("batch %+v names leaves, there were none", ev)
		}
		for _, n := range ev.Joined {
			seen[n] = true
		}
	}
	if len(seen) != joins {
		t.Fatalf("watcher learned of %d joins, want %d: %+v", len(seen), joins, evs)
	}
	if single == joins || len(evs) >= joins {
		t.Fatalf("%d presence messages, %d of them single, for a storm of %d joins: none coalesced", len(evs), single, joins)
	}
	if last := evs[len(evs)-1]; last.Count != joins+1 {
		t.Fatalf("last presence %+v, want count %d", last, joins+1)
	}
}

// TestPresenceStormStaysCoalesced checks that a small room which had to
// coalesce in one tick sends no presence one by one in the next (a storm
// lasts seconds), and that the burst comes back after a quiet tick.
func TestPresenceStormStaysCoalesced(t *testing.T) {
	h := newHub(t, Config{PresenceBurst: 3, PresenceInterval: 300 * time.Millisecond})
	watcher := newFake("watcher")
	r := mustJoin(h, watcher, []byte("stormy"), nil)
	singles := func(evs []event) (n int) {
		for _, ev := range evs {
			if ev.Type != "presence" {
				t.Fatalf("watcher got %+v", ev)
			}
			if ev.Event != "" {
				n++
			}
		}
		return n
	}
	next := 0
	join := func(n int) {
		for range n {
			mustJoin(h, &countMember{name: userName(next)}, []byte("stormy"), nil)
			next++
		}
	}
	for attempt := 0; ; attempt++ {
		watcher.events(t)
		join(10) // past the burst: the rest is coalesced at the next tick
		waitFlushed(t, r)
		tick := h.presenceTick.Load()
		watcher.events(t)
		join(2)
		if h.presenceTick.Load() != tick {
			// A tick passed between the flush and these joins (a slow
			// machine): the room may have cooled down already. Again.
			if attempt == 5 {
				t.Fatal("could not join within one tick of a coalesced one")
			}
			waitFlushed(t, r)
			continue
		}
		waitFlushed(t, r)
		evs := watcher.events(t)
		if n := singles(evs); n != 0 || len(evs) != 1 || len(evs[0].Joined) != 2 {
			t.Fatalf("the tick after a coalesced one: %d single events in %+v, want one batch of both joins", n, evs)
		}
		break
	}
	// A tick with nothing to coalesce ends the storm.
	quiet := h.presenceTick.Load() + 1
	for h.presenceTick.Load() <= quiet {
		time.Sleep(5 * time.Millisecond)
	}
	join(1)
	if evs := watcher.events(t); singles(evs) != 1 {
		t.Fatalf("after a quiet tick: %+v, want the join at once", evs)
	}
}

// TestPresenceKeepsEveryMemberListExact joins and leaves at random in a
// small room whose bursts are coalesced, with ticks falling anywhere: every
// member, from its joined reply and the presence after it, must end with
// the room's exact member list.
func TestPresenceKeepsEveryMemberListExact(t *testing.T) {
	h := newHub(t, Config{PresenceBurst: 2, PresenceInterval: 3 * time.Millisecond})
	name := []byte("exact")
	ms := make([]*fakeMember, 12)
	in := make([]bool, len(ms))
	for i := range ms {
		ms[i] = newFake(userName(i))
	}
	rnd := rand.New(rand.NewPCG(1, 2))
	var r *Room
	for range 600 {
		i := rnd.IntN(len(ms))
		if in[i] {
			r.Leave(ms[i], nil)
		} else {
			r = mustJoin(h, ms[i], name, nil)
		}
		in[i] = !in[i]
		if rnd.IntN(8) == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	waitFlushed(t, r)
	var want []string
	for i, m := range ms {
		if in[i] {
			want = append(want, m.name)
		}
	}
	for i, m := range ms {
		if !in[i] {
			continue
		}
		var list map[string]bool
		for _, ev := range m.events(t) {
			switch {
			case ev.Type == "joined":
				list = map[string]bool{}
				for _, n := range ev.Members {
					list[n] = true
				}
			case ev.Type != "presence":
			case ev.Event == protocol.EventJoin:
				list[ev.Name] = true
			case ev.Event == protocol.EventLeave:
				delete(list, ev.Name)
			default:
				for _, n := range ev.Joined {
					list[n] = true
				}
				for _, n := range ev.Left {
					delete(list, n)
				}
			}
		}
		got := slices.Sorted(maps.Keys(list))
		if !slices.Equal(got, want) {
			t.Errorf("%s sees members %v, the room has %v", m.name, got, want)
		}
	}
}

// TestPresenceLeftListIsBounded checks that churn through a small room in
// one tick cannot make its coalesced presence longer than the room may be.
func TestPresenceLeftListIsBounded(t *testing.T) {
	const limit = 5
	h := newHub(t, Config{PresenceLimit: limit, PresenceBurst: -1, PresenceInterval: 200 * time.Millisecond})
	watcher := newFake("watcher")
	r := mustJoin(h, watcher, []byte("small"), nil)
	waitFlushed(t, r) // the watcher's own join, coalesced too
	watcher.events(t)
	for i := range 20 {
		m := &countMember{name: userName(i)}
		mustJoin(h, m, []byte("small"), nil).Leave(m, nil)
	}
	waitFlushed(t, r)
	var left int
	for _, ev := range watcher.events(t) {
		if ev.Type != "presence" || ev.Event != "" || len(ev.Joined) != 0 || len(ev.Left) > limit || ev.Count != 1 {
			t.Fatalf("watcher got %+v, want coalesced leaves of at most %d names, count 1", ev, limit)
		}
		left += len(ev.Left)
	}
	if left == 0 {
		t.Fatal("no coalesced presence for 20 joins and leaves")
	}
}

// TestMembershipAcrossRoomSizes grows a room well past the size at which it
// indexes its members and empties it again, leaving in an order that moves
// members around the fan-out list. At every size a member, and only a
// member, may publish, and each message reaches exactly the members.
func TestMembershipAcrossRoomSizes(t *testing.T) {
	h := newHub(t, Config{})
	const n = 3 * smallRoom
	ms := make([]*fakeMember, n)
	in := make([]bool, n)
	var r *Room
	step := 0
	check := func(from int) {
		t.Helper()
		step++
		text := fmt.Sprintf("step %d", step)
		if err := publish(r, ms[from], []byte(text)); err != nil {
			t.Fatalf("step %d: member %d: %v", step, from, err)
		}
		members := 0
		for i, m := range ms {
			if m == nil {
				continue
			}
			got := 0
			for _, ev := range m.events(t) {
				if ev.Type == "msg" {
					got++
					if ev.Text != text {
						t.Fatalf("step %d: %s got %q", step, m.name, ev.Text)
					}
				}
			}
			if want := map[bool]int{true: 1, false: 0}[in[i]]; got != want {
				t.Fatalf("step %d: %s (member: %v) got %d messages, want %d", step, m.name, in[i], got, want)
			}
			if in[i] {
				members++
			} else if err := publish(r, m, []byte("not a member")); err == nil || err.Code != protocol.CodeNotMember {
				t.Fatalf("step %d: publish from %s, who left, = %v", step, m.name, err)
			}
		}
		if r.Count() != members {
			t.Fatalf("step %d: Count = %d, want %d", step, r.Count(), members)
		}
	}
	for i := range ms {
		ms[i] = newFake(userName(i))
		r = mustJoin(h, ms[i], []byte("sizes"), nil)
		in[i] = true
		check(i)
	}
	if r.index == nil {
		t.Fatalf("a room of %d members has no index", n)
	}
	// Leave in a shuffled order, so the last member keeps moving into a
	// leaver's place; member 1 stays to the end to publish.
	for _, i := range rand.New(rand.NewPCG(1, 2)).Perm(n) {
		if i == 1 {
			continue
		}
		if !r.Leave(ms[i], nil) {
			t.Fatalf("Leave of member %d reported false", i)
		}
		in[i] = false
		check(1)
	}
	if r.index != nil {
		t.Errorf("a room down to one member still keeps its index of %d", len(r.index))
	}
}
