package room

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"nbchat/protocol"
)

func seqsOf(evs []event, typ string) []uint64 {
	var out []uint64
	for _, e := range evs {
		if e.Type == typ {
			out = append(out, e.Seq)
		}
	}
	return out
}

func span(from, to uint64) []uint64 {
	var out []uint64
	for s := from; s <= to; s++ {
		out = append(out, s)
	}
	return out
}

func TestJoinSinceRecoversExactlyTheMissedMessages(t *testing.T) {
	h := newHub(t, Config{HistorySize: 100})
	alice, bob := newFake("alice"), newFake("bob")
	r := mustJoin(h, alice, []byte("lobby"), nil)
	mustJoin(h, bob, []byte("lobby"), nil)
	for i := range 5 {
		publish(r, alice, fmt.Appendf(nil, "m%d", i))
	}
	r.Drop(bob) // bob's connection blinks after seq 5
	for i := 5; i < 9; i++ {
		publish(r, alice, fmt.Appendf(nil, "m%d", i))
	}
	bob.events(t)
	if _, err := h.Join(bob, []byte("lobby"), nil, 5); err != nil {
		t.Fatal(err)
	}
	publish(r, alice, []byte("live"))
	evs := bob.events(t)
	if evs[0].Type != "joined" || !evs[0].Recovered || evs[0].Seq != 9 {
		t.Fatalf("first reply %+v, want joined seq 9 recovered", evs[0])
	}
	if got := seqsOf(evs, "msg"); !slices.Equal(got, span(6, 10)) {
		t.Fatalf("recovered seqs %v, want 6..10 with no gap or duplicate", got)
	}
}

func TestJoinSinceOlderThanKeptIsNotRecovered(t *testing.T) {
	h := newHub(t, Config{HistorySize: 3})
	alice, bob := newFake("alice"), newFake("bob")
	r := mustJoin(h, alice, []byte("lobby"), nil)
	for i := range 10 {
		publish(r, alice, fmt.Appendf(nil, "m%d", i))
	}
	if _, err := h.Join(bob, []byte("lobby"), nil, 2); err != nil {
		t.Fatal(err)
	}
	evs := bob.events(t)
	if evs[0].Type != "joined" || evs[0].Recovered || !evs[0].HasRecovered {
		t.Fatalf("got %+v, want recovered:false", evs[0])
	}
	if got := seqsOf(evs, "msg"); !slices.Equal(got, span(8, 10)) {
		t.Fatalf("sent %v, want what is kept: 8..10", got)
	}
}

func TestJoinSinceAheadIsAnError(t *testing.T) {
	h := newHub(t, Config{HistorySize: 10})
	alice := newFake("alice")
	r := mustJoin(h, alice, []byte("lobby"), nil)
	publish(r, alice, []byte("one"))
	if _, err := h.Join(newFake("bob"), []byte("lobby"), nil, 2); err == nil || err.Code != protocol.CodeBadRequest {
		t.Fatalf("since ahead: err %v, want bad_request", err)
	}
	if r.Count() != 1 {
		t.Fatalf("a refused join added a member: count %d", r.Count())
	}
}

func TestJoinSendsRecentHistory(t *testing.T) {
	h := newHub(t, Config{HistorySize: 100, JoinHistory: 3})
	alice := newFake("alice")
	r := mustJoin(h, alice, []byte("lobby"), nil)
	for i := range 7 {
		publish(r, alice, fmt.Appendf(nil, "m%d", i))
	}
	bob := newFake("bob")
	mustJoin(h, bob, []byte("lobby"), nil)
	if got := seqsOf(bob.events(t), "msg"); !slices.Equal(got, span(5, 7)) {
		t.Fatalf("newcomer got %v, want the last three: 5..7", got)
	}
}

func TestHistoryPagesBackwards(t *testing.T) {
	h := newHub(t, Config{HistorySize: 100})
	alice := newFake("alice")
	r := mustJoin(h, alice, []byte("lobby"), nil)
	for i := range 25 {
		publish(r, alice, fmt.Appendf(nil, "m%d", i))
	}
	alice.events(t)
	var all []uint64
	before := int64(0)
	for page := 0; ; page++ {
		if err := r.History(alice, before, 10, nil); err != nil {
			t.Fatal(err)
		}
		e := alice.only(t)
		var seqs []uint64
		for _, m := range e.Messages {
			seqs = append(seqs, m.Seq)
		}
		all = append(seqs, all...)
		if !e.More {
			break
		}
		before = int64(seqs[0])
		if page > 5 {
			t.Fatal("paging does not end")
		}
	}
	if !slices.Equal(all, span(1, 25)) {
		t.Fatalf("paged %v, want 1..25 once each", all)
	}
	if err := r.History(newFake("stranger"), 0, 10, nil); err == nil || err.Code != protocol.CodeNotMember {
		t.Fatalf("stranger: err %v, want not_member", err)
	}
}

func TestRoomWithHistoryOutlivesItsMembers(t *testing.T) {
	h := newHub(t, Config{HistorySize: 10, HistoryAge: time.Hour})
	alice := newFake("alice")
	r := mustJoin(h, alice, []byte("lobby"), nil)
	publish(r, alice, []byte("one"))
	publish(r, alice, []byte("two"))
	r.Drop(alice)
	if h.Find([]byte("lobby")) != r {
		t.Fatal("a room with history went away when it emptied")
	}
	r2 := mustJoin(h, alice, []byte("lobby"), nil)
	if seq, _ := r2.Publish(alice, []byte("three"), nil); seq != 3 {
		t.Fatalf("seq after the room emptied is %d, want 3: seq must not go back", seq)
	}
	// Once its history expires, an empty room is swept away.
	r2.Drop(alice)
	h.sweepRooms(time.Now().Add(2 * time.Hour).UnixMilli())
	if h.Find([]byte("lobby")) != nil {
		t.Fatal("an empty room with expired history was not swept")
	}
}

func TestDirectMessagesAreKeptAndReplayed(t *testing.T) {
	h := newHub(t, Config{DMHistory: 10})
	alice, bob := newFake("alice"), newFake("bob")
	register(h, "alice", alice)
	register(h, "bob", bob)
	dm(h, alice, []byte("bob"), []byte("one"))
	bobEvs := bob.events(t)
	if len(bobEvs) != 1 || bobEvs[0].Seq != 1 {
		t.Fatalf("bob got %+v, want dm seq 1", bobEvs)
	}
	// bob drops; a DM sent while he is away is kept, not refused.
	unregister(h, "bob", bob)
	if err := dm(h, alice, []byte("bob"), []byte("two")); err != nil {
		t.Fatalf("DM to a user who just left: %v", err)
	}
	bob2 := newFake("bob")
	u, ok := h.Register("bob", bob2)
	if !ok {
		t.Fatal("bob could not come back")
	}
	if err := u.Attach(bob2, 1); err != nil {
		t.Fatal(err)
	}
	evs := bob2.events(t)
	if len(evs) != 2 || evs[0].Type != "welcome" || evs[1].Type != "dm" || evs[1].Text != "two" || evs[1].Seq != 2 {
		t.Fatalf("bob after reconnect got %+v, want welcome then dm seq 2", evs)
	}
	if u.Attach(bob2, 99) == nil {
		t.Fatal("dm_since ahead of the latest DM was accepted")
	}
	if err := dm(h, alice, []byte("nobody"), []byte("x")); err == nil || err.Code != protocol.CodeNoSuchUser {
		t.Fatalf("DM to a name never seen: %v", err)
	}
}

func TestRecallFindsResentIDs(t *testing.T) {
	h := newHub(t, Config{})
	m := newFake("alice")
	u, _ := h.Register("alice", m)
	if _, ok := u.Recall("lobby", []byte(`"m1"`)); ok {
		t.Fatal("recalled an id never sent")
	}
	u.Remember("lobby", []byte(`"m1"`), 7)
	if seq, ok := u.Recall("lobby", []byte(`"m1"`)); !ok || seq != 7 {
		t.Fatalf("Recall = %d, %v; want 7, true", seq, ok)
	}
	if _, ok := u.Recall("other", []byte(`"m1"`)); ok {
		t.Fatal("an id recalled in another room")
	}
	// The user, and its ids, outlive its connection for a while.
	h.Unregister(u, m)
	u2, _ := h.Register("alice", newFake("alice"))
	if seq, ok := u2.Recall("lobby", []byte(`"m1"`)); !ok || seq != 7 {
		t.Fatal("ids were forgotten across a reconnect")
	}
}

func TestHistoryRingKeepsConsecutiveSeqs(t *testing.T) {
	var hist history
	hist.max = 5
	m := newFake("m")
	for s := uint64(1); s <= 12; s++ {
		hist.add(protocol.Msg("r", "a", []byte("x"), s, 0), s, 0)
	}
	if hist.first != 8 || hist.next() != 13 {
		t.Fatalf("ring holds %d..%d, want 8..12", hist.first, hist.next()-1)
	}
	hist.since(m, 9)
	if got := seqsOf(m.events(t), "msg"); !slices.Equal(got, span(10, 12)) {
		t.Fatalf("since 9 gave %v", got)
	}
	if !hist.covers(7, 12) || hist.covers(6, 12) {
		t.Fatal("covers is wrong at the edge of what is kept")
	}
	hist.clear()
}

func TestDMToUserWhoJustLeftIsKept(t *testing.T) {
	h := newHub(t, Config{DMHistory: 10})
	alice, bob := newFake("alice"), newFake("bob")
	register(h, "alice", alice)
	register(h, "bob", bob)
	unregister(h, "alice", alice) // no DMs and no ids yet
	if err := dm(h, bob, []byte("alice"), []byte("hi")); err != nil {
		t.Fatalf("DM to a user who left a moment ago: %v", err)
	}
	h.sweepUsers(time.Now().Add(2 * time.Hour).UnixMilli())
	if err := dm(h, bob, []byte("alice"), []byte("hi")); err == nil || err.Code != protocol.CodeNoSuchUser {
		t.Fatalf("after OfflineTTL: err %v, want no_such_user", err)
	}
}

// TestHistoryCompactsFramesNoLongerQueued: kept frames move into buffers of
// their own size once no connection's queue holds them; one still queued
// stops the pass and is compacted on a later one, and replays are the same
// bytes throughout.
func TestHistoryCompactsFramesNoLongerQueued(t *testing.T) {
	var hist history
	hist.max = 10
	var want [][]byte
	for s := uint64(1); s <= 3; s++ {
		f := protocol.Msg("r", "a", []byte("x"), s, 0)
		want = append(want, slices.Clone(f.Bytes()))
		hist.add(f, s, 0)
	}
	queued := hist.at(2).f
	queued.Retain(1)
	hist.compact()
	small := func(s uint64) bool { b := hist.at(s).f.Bytes(); return cap(b) < 2*len(b) }
	if !small(1) || small(2) || small(3) {
		t.Fatalf("after a pass with seq 2 queued: compact %v %v %v, want true false false", small(1), small(2), small(3))
	}
	queued.Release()
	hist.compact()
	if !small(2) || !small(3) {
		t.Fatal("frames no longer queued were not compacted on the next pass")
	}
	m := newFake("m")
	hist.since(m, 0)
	for s := uint64(1); s <= 3; s++ {
		if got := hist.at(s).f.Bytes(); !slices.Equal(got, want[s-1]) {
			t.Fatalf("seq %d is %q after compaction, want %q", s, got, want[s-1])
		}
	}
	if got := seqsOf(m.events(t), "msg"); !slices.Equal(got, span(1, 3)) {
		t.Fatalf("replay after compaction gave %v", got)
	}
	hist.clear()
}
