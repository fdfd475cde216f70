package loop

import (
	"sync"
	"sync/atomic"
)

// registry is the set of open connections, for the janitor, shutdown and
// the connection count.
type registry struct {
	count atomic.Int64

	mu    sync.Mutex
	conns map[*conn]struct{}
}

func newRegistry() *registry { return &registry{conns: make(map[*conn]struct{})} }

func (r *registry) add(c *conn) {
	r.mu.Lock()
	r.conns[c] = struct{}{}
	r.mu.Unlock()
	r.count.Add(1)
}

func (r *registry) remove(c *conn) {
	r.mu.Lock()
	_, ok := r.conns[c]
	delete(r.conns, c)
	r.mu.Unlock()
	if ok {
		r.count.Add(-1)
	}
}

// snapshot appends every open connection to dst.
func (r *registry) snapshot(dst []*conn) []*conn {
	r.mu.Lock()
	for c := range r.conns {
		dst = append(dst, c)
	}
	r.mu.Unlock()
	return dst
}
