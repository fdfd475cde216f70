package loop

import (
	"net"
	"os"
	"slices"
	"syscall"
	"testing"

	"github.com/lesismal/nbio"
)

// socketConns returns n nbio connections, each one end of a socket pair
// (the other end closed), closed when the test ends.
func socketConns(t *testing.T, n int) []*nbio.Conn {
	t.Helper()
	out := make([]*nbio.Conn, n)
	for i := range out {
		fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
		if err != nil {
			t.Fatal(err)
		}
		_ = syscall.Close(fds[1])
		f := os.NewFile(uintptr(fds[0]), "pair")
		c, err := net.FileConn(f)
		_ = f.Close()
		if err != nil {
			t.Fatal(err)
		}
		if out[i], err = nbio.NBConn(c); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = out[i].Close() })
	}
	return out
}

// TestHandshakeQueue pushes connections tick by tick while the due ones
// are taken out (the queue moves its live part to the front as it goes):
// each silent one comes out once, on its tick, in order, and none that
// has read. A connection whose number was taken over by a newer one does
// not bring the newer one out early.
func TestHandshakeQueue(t *testing.T) {
	conns := socketConns(t, 600)
	h := newHandshakeQueue(slices.MaxFunc(conns, func(a, b *nbio.Conn) int { return a.Hash() - b.Hash() }).Hash() + 1)
	dueAt := make(map[*nbio.Conn]int64)
	var want []*nbio.Conn // silent connections, in push order
	var got []*nbio.Conn
	check := func(now int64) {
		t.Helper()
		got = h.due(now, got[:0])
		for _, c := range got {
			if len(want) == 0 || c != want[0] {
				t.Fatalf("tick %d: fd %d out of order", now, c.Hash())
			}
			if dueAt[c] > now {
				t.Fatalf("tick %d: fd %d out before its tick %d", now, c.Hash(), dueAt[c])
			}
			want = want[1:]
		}
		if len(want) > 0 && dueAt[want[0]] <= now {
			t.Fatalf("tick %d: fd %d is due and still queued", now, want[0].Hash())
		}
	}
	// Seven connections a tick, each due three ticks later; every third
	// one reads before then.
	tick := int64(0)
	for i, c := range conns {
		if i%7 == 0 {
			tick++
			check(tick)
		}
		dueAt[c] = tick + 3
		if !h.push(c, dueAt[c]) {
			t.Fatalf("fd %d refused", c.Hash())
		}
		if i%3 == 0 {
			if !h.take(c) || h.take(c) {
				t.Fatalf("fd %d: the first take is not the only one to report a first read", c.Hash())
			}
		} else {
			want = append(want, c)
		}
	}
	for ; len(want) > 0 && tick < 1000; tick++ {
		check(tick)
	}
	if len(want) > 0 || len(h.q) != 0 || h.head != 0 {
		t.Fatalf("drained queue: %d silent ones left, %d entries from %d", len(want), len(h.q), h.head)
	}

	// A number taken over: the entry of the first holder is due first and
	// must not bring out the second.
	old, fresh := conns[1], conns[2]
	h.push(old, tick+1)
	h.take(old) // closed
	// As if fresh had old's number: the slot holds fresh with its deadline.
	w := &h.waiting[old.Hash()]
	w.by.Store(tick + 5)
	w.nbc.Store(fresh)
	h.q = append(h.q, pendingHandshake{old.Hash(), tick + 5})
	if got = h.due(tick+1, got[:0]); len(got) != 0 {
		t.Fatalf("the closed holder's deadline brought out %d", len(got))
	}
	if got = h.due(tick+5, got[:0]); len(got) != 1 || got[0] != fresh {
		t.Fatalf("at its own deadline the new holder came out as %v", got)
	}

	// A number past the table is neither queued nor taken as a first read.
	if small := newHandshakeQueue(1); small.push(conns[0], tick) || small.take(conns[0]) {
		t.Fatalf("fd %d queued or taken in a table of one", conns[0].Hash())
	}

	// A burst all due on one tick, then nothing: the queue lets go of it.
	for range 5000 {
		h.push(conns[0], tick+10)
	}
	if got = h.due(tick+10, got[:0]); len(got) != 5000 {
		t.Fatalf("%d of the burst out, want 5000", len(got))
	}
	if len(h.q) != 0 || cap(h.q) > 4096 {
		t.Fatalf("drained queue: %d entries, capacity %d", len(h.q), cap(h.q))
	}
}
