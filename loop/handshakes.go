package loop

import (
	"sync"

	"github.com/lesismal/nbio"
)

// handshakeQueue bounds the time from accept to a plain connection's first
// read without a timer per connection (a timer is armed and stopped within
// a millisecond for nearly every connection, and costs an allocation). The
// timeout is the same for every connection, so in accept order the
// deadlines are in order too: the janitor takes them from the front.
type handshakeQueue struct {
	mu   sync.Mutex
	q    []pendingHandshake
	head int
}

type pendingHandshake struct {
	nbc *nbio.Conn
	by  int64 // janitor tick
}

// push adds nbc, which must have read something by tick by.
func (h *handshakeQueue) push(nbc *nbio.Conn, by int64) {
	h.mu.Lock()
	h.q = append(h.q, pendingHandshake{nbc, by})
	h.mu.Unlock()
}

// due appends to dst, and forgets, the connections whose deadline is tick
// now or earlier.
func (h *handshakeQueue) due(now int64, dst []*nbio.Conn) []*nbio.Conn {
	h.mu.Lock()
	defer h.mu.Unlock()
	for h.head < len(h.q) && h.q[h.head].by <= now {
		dst = append(dst, h.q[h.head].nbc)
		h.q[h.head] = pendingHandshake{}
		h.head++
	}
	switch {
	case h.head == len(h.q) && cap(h.q) > 4096:
		h.q, h.head = nil, 0 // a burst is over
	case h.head == len(h.q):
		h.q, h.head = h.q[:0], 0
	case h.head > len(h.q)/2:
		// Connections keep arriving: move the live part to the front.
		n := copy(h.q, h.q[h.head:])
		clear(h.q[n:])
		h.q, h.head = h.q[:n], 0
	}
	return dst
}

// closeSilent closes the plain connections that have read nothing by their
// deadline. A connection that did read has its bit in first cleared; one
// since closed is closed again, which nbio ignores, whatever connection
// has its number now.
func (s *Server) closeSilent(now int64, batch []*nbio.Conn) []*nbio.Conn {
	batch = s.handshakes.due(now, batch[:0])
	for i, nbc := range batch {
		if s.first.has(nbc.Hash()) {
			_ = nbc.Close()
		}
		batch[i] = nil
	}
	return batch
}
