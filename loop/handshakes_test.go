package loop

import (
	"testing"

	"github.com/lesismal/nbio"
)

// TestHandshakeQueueKeepsOrder pushes connections tick by tick while the
// due ones are taken out (the queue moves its live part to the front as it
// goes), then a burst all due at once: each comes out once, on its tick,
// in order, and the drained queue lets the burst's memory go.
func TestHandshakeQueueKeepsOrder(t *testing.T) {
	var h handshakeQueue
	conns := make([]*nbio.Conn, 10000)
	dueAt := make([]int64, len(conns))
	for i := range conns {
		conns[i] = &nbio.Conn{}
	}
	next := 0 // the next connection due out
	var got []*nbio.Conn
	check := func(now int64) {
		t.Helper()
		got = h.due(now, got[:0])
		for _, c := range got {
			if c != conns[next] {
				t.Fatalf("tick %d: connection %d out of order", now, next)
			}
			if dueAt[next] > now {
				t.Fatalf("tick %d: connection %d out before its tick %d", now, next, dueAt[next])
			}
			next++
		}
		if next < len(conns) && dueAt[next] != 0 && dueAt[next] <= now {
			t.Fatalf("tick %d: connection %d is due and still queued", now, next)
		}
	}
	// Seven connections a tick, each due three ticks later.
	const steady = 5000
	tick := int64(0)
	for i := range steady {
		if i%7 == 0 {
			tick++
			check(tick)
		}
		dueAt[i] = tick + 3
		h.push(conns[i], dueAt[i])
	}
	for ; next < steady; tick++ {
		check(tick)
	}
	// A burst, all due on the same tick.
	for i := steady; i < len(conns); i++ {
		dueAt[i] = tick + 1
		h.push(conns[i], dueAt[i])
	}
	check(tick)
	if next != steady {
		t.Fatalf("%d out before the burst is due", next-steady)
	}
	check(tick + 1)
	if next != len(conns) {
		t.Fatalf("%d of %d out", next, len(conns))
	}
	if len(h.q) != 0 || h.head != 0 || cap(h.q) > 4096 {
		t.Fatalf("drained queue: %d entries from %d, capacity %d", len(h.q), h.head, cap(h.q))
	}
}
