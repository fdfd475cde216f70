package loop

import (
	"sync"

	"nbchat/protocol"
)

// flusher writes the queued frames of the connections assigned to it. One
// runs per core; connections are spread over them round-robin.
type flusher struct {
	srv *Server

	// mu guards ready, the connections with frames to write.
	mu    sync.Mutex
	ready []*conn
	wake  chan struct{}

	// Owned by the flusher goroutine.
	work   []*conn
	frames []*protocol.Frame
	buf    []byte
}

func newFlusher(s *Server) *flusher {
	return &flusher{srv: s, wake: make(chan struct{}, 1)}
}

// add puts c on the ready list; c.qmu must not be held by the caller for
// longer than needed, and c must not already be on the list (c.dirty).
func (fl *flusher) add(c *conn) {
	fl.mu.Lock()
	fl.ready = append(fl.ready, c)
	first := len(fl.ready) == 1
	fl.mu.Unlock()
	if first {
		select {
		case fl.wake <- struct{}{}:
		default:
		}
	}
}

// run writes ready connections until stop is closed.
func (fl *flusher) run(stop <-chan struct{}, done *sync.WaitGroup) {
	defer done.Done()
	for {
		select {
		case <-stop:
			return
		case <-fl.wake:
		}
		for {
			fl.mu.Lock()
			fl.work, fl.ready = fl.ready, fl.work[:0]
			fl.mu.Unlock()
			if len(fl.work) == 0 {
				break
			}
			for i, c := range fl.work {
				c.flush(fl)
				fl.work[i] = nil
			}
		}
		// A burst can leave a large buffer behind; do not pin it.
		if cap(fl.buf) > maxKeptFlushBuffer {
			fl.buf = nil
		}
	}
}

// maxKeptFlushBuffer bounds the write buffer a flusher keeps between bursts.
const maxKeptFlushBuffer = 1 << 20
