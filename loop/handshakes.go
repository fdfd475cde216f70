package loop

import (
	"sync"
	"sync/atomic"

	"github.com/lesismal/nbio"
)

// handshakeQueue bounds the time from accept to a plain connection's first
// read without a timer per connection (a timer is armed and stopped within
// a millisecond for nearly every connection, and costs an allocation). The
// timeout is the same for every connection, so in accept order the
// deadlines are in order too: the janitor takes them from the front. The
// queue holds fd numbers, and waiting the connections by number until
// their first read or close, so that it keeps no closed connection alive.
// waiting is also how onData tells a first read (only a first read can be
// an upgrade for fastUpgrade, or a request nbhttp has not started on).
type handshakeQueue struct {
	waiting []handshakeSlot // by fd

	mu   sync.Mutex
	q    []pendingHandshake
	head int
}

// handshakeSlot is the connection on an fd number that has not read yet,
// and its deadline, which tells it from one closed and since replaced on
// the same number.
type handshakeSlot struct {
	nbc atomic.Pointer[nbio.Conn]
	by  atomic.Int64
}

type pendingHandshake struct {
	fd int
	by int64 // janitor tick
}

func newHandshakeQueue(fds int) *handshakeQueue {
	return &handshakeQueue{waiting: make([]handshakeSlot, fds)}
}

// push adds nbc, which must have read something by tick by; it reports
// false for a number past the queue's table.
func (h *handshakeQueue) push(nbc *nbio.Conn, by int64) bool {
	fd := nbc.Hash()
	if fd < 0 || fd >= len(h.waiting) {
		return false
	}
	w := &h.waiting[fd]
	w.by.Store(by) // before nbc: whoever sees nbc sees its deadline
	w.nbc.Store(nbc)
	h.mu.Lock()
	h.q = append(h.q, pendingHandshake{fd, by})
	h.mu.Unlock()
	return true
}

// take takes nbc off the waiting list, on its first read or its close,
// and reports whether it was on it: whether a read is nbc's first.
func (h *handshakeQueue) take(nbc *nbio.Conn) bool {
	fd := nbc.Hash()
	if fd < 0 || fd >= len(h.waiting) {
		return false
	}
	w := &h.waiting[fd].nbc
	// Most reads are not first reads: a load keeps them from writing the
	// slot, whose cache line other connections share.
	return w.Load() == nbc && w.CompareAndSwap(nbc, nil)
}

// due appends to dst the connections whose deadline is tick now or earlier
// and which have not read, and forgets every entry due.
func (h *handshakeQueue) due(now int64, dst []*nbio.Conn) []*nbio.Conn {
	h.mu.Lock()
	defer h.mu.Unlock()
	for h.head < len(h.q) && h.q[h.head].by <= now {
		e := h.q[h.head]
		h.head++
		w := &h.waiting[e.fd]
		if nbc := w.nbc.Load(); nbc != nil && w.by.Load() == e.by {
			dst = append(dst, nbc)
		}
	}
	switch {
	case h.head == len(h.q) && cap(h.q) > 4096:
		h.q, h.head = nil, 0 // a burst is over
	case h.head == len(h.q):
		h.q, h.head = h.q[:0], 0
	case h.head > len(h.q)/2:
		// Connections keep arriving: move the live part to the front.
		n := copy(h.q, h.q[h.head:])
		h.q, h.head = h.q[:n], 0
	}
	return dst
}

// closeSilent closes the plain connections that have read nothing by their
// deadline.
func (s *Server) closeSilent(now int64, batch []*nbio.Conn) []*nbio.Conn {
	batch = s.handshakes.due(now, batch[:0])
	for i, nbc := range batch {
		_ = nbc.Close()
		batch[i] = nil
	}
	return batch
}
