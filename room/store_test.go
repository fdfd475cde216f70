package room

import (
	"slices"
	"testing"
	"time"

	"nbchat/store"
)

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
	for range 5 {
		if err := publish(r, alice, []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	var got []uint64
	for len(got) < 5 && time.Now().Before(deadline) {
		got = append(got, seqsOf(alice.events(t), "msg")...)
		time.Sleep(5 * time.Millisecond)
	}
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
