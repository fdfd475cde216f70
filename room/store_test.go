package room

import (
	"slices"
	"testing"
	"time"

	"nbchat/store"
)

// publishShown has m publish n messages to r and returns the seqs of the
// messages m is shown within 5 s (with a store, once they are stored).
func publishShown(t *testing.T, r *Room, m *fakeMember, n int) []uint64 {
	t.Helper()
	for range n {
		if err := publish(r, m, []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	var got []uint64
	for deadline := time.Now().Add(5 * time.Second); len(got) < n && time.Now().Before(deadline); {
		got = append(got, seqsOf(m.events(t), "msg")...)
		time.Sleep(5 * time.Millisecond)
	}
	return got
}

// openStore opens a store in a temporary directory for the test. It is
// closed after the test's hubs (cleanups run last-registered first).
func openStore(t *testing.T) *store.Store {
	t.Helper()
	st, err := store.Open(t.TempDir(), 100, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

// TestStoredRoomShowsMessagesOnceDurableAndContinuesAfterRestart runs a hub
// on a real store: messages arrive in order once stored, and a new hub on
// the same files continues the room's seq and history.
func TestStoredRoomShowsMessagesOnceDurableAndContinuesAfterRestart(t *testing.T) {
	dir := t.TempDir()
	st, err := store.Open(dir, 100, nil)
	if err != nil {
		t.Fatal(err)
	}
	h := newHub(t, Config{Store: st, HistorySize: 100})
	alice := newFake("alice")
	register(h, "alice", alice)
	r := mustJoin(h, alice, []byte("lobby"), nil)
	got := publishShown(t, r, alice, 5)
	if !slices.Equal(got, span(1, 5)) {
		t.Fatalf("delivered %v, want 1..5 in order", got)
	}
	h.Close()
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	st, err = store.Open(dir, 100, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	h = newHub(t, Config{Store: st, HistorySize: 100})
	bob := newFake("bob")
	if _, err := h.Join(bob, []byte("lobby"), nil, 2); err != nil {
		t.Fatal(err)
	}
	evs := bob.events(t)
	if evs[0].Seq != 5 || !evs[0].Recovered {
		t.Fatalf("joined after restart %+v, want seq 5 recovered", evs[0])
	}
	if got := seqsOf(evs, "msg"); !slices.Equal(got, span(3, 5)) {
		t.Fatalf("recovered %v after restart, want 3..5", got)
	}
}

// TestEmptyStoredRoomLeavesMemoryAndComesBack: a room empty for RoomTTL
// whose messages are all stored is dropped from memory; the next join
// reads seq and history back, so recovery and numbering go on as if it
// had stayed.
func TestEmptyStoredRoomLeavesMemoryAndComesBack(t *testing.T) {
	st := openStore(t)
	h := newHub(t, Config{Store: st, HistorySize: 100, RoomTTL: time.Minute})
	alice := newFake("alice")
	register(h, "alice", alice)
	r := mustJoin(h, alice, []byte("lobby"), nil)
	got := publishShown(t, r, alice, 5)
	if len(got) != 5 {
		t.Fatalf("delivered %v, want 5 stored messages", got)
	}
	r.Drop(alice)

	now := time.Now().UnixMilli()
	h.sweepRooms(now)
	if h.Find([]byte("lobby")) != r {
		t.Fatal("an empty room left memory before RoomTTL")
	}
	h.sweepRooms(now + time.Minute.Milliseconds() - 1)
	if h.Find([]byte("lobby")) != r {
		t.Fatal("an empty room left memory before RoomTTL")
	}
	h.sweepRooms(now + time.Minute.Milliseconds())
	if h.Find([]byte("lobby")) != nil {
		t.Fatal("an empty stored room stayed in memory past RoomTTL")
	}
	if n := h.Stats().Rooms; n != 0 {
		t.Fatalf("%d rooms counted after the eviction, want 0", n)
	}

	bob := newFake("bob")
	register(h, "bob", bob)
	r2, jerr := h.Join(bob, []byte("lobby"), nil, 2)
	if jerr != nil {
		t.Fatal(jerr)
	}
	evs := bob.events(t)
	if evs[0].Seq != 5 || !evs[0].Recovered {
		t.Fatalf("joined after eviction %+v, want seq 5 recovered", evs[0])
	}
	if got := seqsOf(evs, "msg"); !slices.Equal(got, span(3, 5)) {
		t.Fatalf("recovered %v after eviction, want 3..5", got)
	}
	if seq, err := r2.Publish(bob, []byte("y"), nil); err != nil || seq != 6 {
		t.Fatalf("seq after eviction %d (%v), want 6", seq, err)
	}
}

// TestRoomStaysInMemoryWithoutStoreOrWhenTTLIsOff: without a store the
// room's history lives only in memory, so it stays; a negative RoomTTL
// keeps stored rooms too.
func TestRoomStaysInMemoryWithoutStoreOrWhenTTLIsOff(t *testing.T) {
	st := openStore(t)
	for _, cfg := range []Config{
		{HistorySize: 10, RoomTTL: time.Minute},
		{Store: st, HistorySize: 10, RoomTTL: -1},
	} {
		h := newHub(t, cfg)
		alice := newFake("alice")
		r := mustJoin(h, alice, []byte("lobby"), nil)
		if got := publishShown(t, r, alice, 1); len(got) != 1 {
			t.Fatalf("delivered %v, want one message", got)
		}
		r.Drop(alice)
		now := time.Now().UnixMilli()
		h.sweepRooms(now)
		h.sweepRooms(now + time.Hour.Milliseconds())
		if h.Find([]byte("lobby")) != r {
			t.Fatalf("store %v, RoomTTL %v: the room left memory", cfg.Store != nil, cfg.RoomTTL)
		}
	}
}

// TestSweepExpiresStoredMessages: the sweep drops stored messages older
// than HistoryAge from disk too, keeping the room's seq.
func TestSweepExpiresStoredMessages(t *testing.T) {
	st := openStore(t)
	h := newHub(t, Config{Store: st, HistorySize: 100, HistoryAge: time.Hour})
	alice := newFake("alice")
	r := mustJoin(h, alice, []byte("lobby"), nil)
	if got := publishShown(t, r, alice, 3); len(got) != 3 {
		t.Fatalf("delivered %v, want 3 stored messages", got)
	}
	h.expireStored(time.Now().UnixMilli())
	if _, entries, _ := st.Load("r/lobby", 10); len(entries) != 3 {
		t.Fatalf("%d stored messages after a sweep within HistoryAge, want 3", len(entries))
	}
	h.expireStored(time.Now().Add(2 * time.Hour).UnixMilli())
	if seq, entries, _ := st.Load("r/lobby", 10); seq != 3 || len(entries) != 0 {
		t.Fatalf("after HistoryAge: seq %d, %d stored messages; want seq 3 and none", seq, len(entries))
	}
}
