package room

import (
	"fmt"
	"testing"
)

// publishAllocs measures the allocations of one Publish into a room of n
// counting members, with a warm frame pool and a full history (whose
// oldest frame goes back to the pool as each new one is kept).
func publishAllocs(t *testing.T, n int) float64 {
	t.Helper()
	h := newHub(t, Config{HistorySize: 16})
	r, ms := fill(h, "allocs", n)
	text := []byte("hello, everyone")
	for range 50 { // fill the history and warm the frame pool
		publish(r, ms[0], text)
	}
	return testing.AllocsPerRun(100, func() {
		if err := publish(r, ms[0], text); err != nil {
			t.Fatal(err)
		}
	})
}

// TestPublishNoAllocsPerRecipient pins fan-out at zero allocations: the
// frame is encoded once into a pooled buffer and every member gets a
// reference to it.
func TestPublishNoAllocsPerRecipient(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items on purpose under the race detector")
	}
	allocs := make(map[int]float64)
	for _, n := range []int{1, 100, 10000} {
		allocs[n] = publishAllocs(t, n)
		t.Logf("members=%d: %v allocs per Publish", n, allocs[n])
	}
	if allocs[10000] != allocs[1] {
		t.Errorf("Publish allocates per recipient: %v allocs with 1 member, %v with 10000", allocs[1], allocs[10000])
	}
	if allocs[1] != 0 {
		t.Errorf("Publish allocates %v times per broadcast with a warm frame pool, want 0", allocs[1])
	}
}

func TestDMNoAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items on purpose under the race detector")
	}
	h := newHub(t, Config{DMHistory: 8})
	a, b := &countMember{name: "a"}, &countMember{name: "b"}
	register(h, "a", a)
	register(h, "b", b)
	to, text := []byte("b"), []byte("psst")
	for _, tt := range []struct {
		name string
		to   []byte
	}{{"other", to}, {"self", []byte("a")}} {
		t.Run(fmt.Sprintf("to=%s", tt.name), func(t *testing.T) {
			for range 50 { // fill both inboxes and warm the frame pool
				dm(h, a, tt.to, text)
			}
			if n := testing.AllocsPerRun(100, func() { dm(h, a, tt.to, text) }); n != 0 {
				t.Errorf("DM allocates %v times, want 0", n)
			}
		})
	}
}
