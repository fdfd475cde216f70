package loop

import (
	"errors"
	"net"
	"time"
)

// Accept backoff bounds, as net/http uses: a process out of file descriptors
// retries soon, then less and less often.
const (
	acceptBackoffMin = 5 * time.Millisecond
	acceptBackoffMax = time.Second
)

// backoffListener sleeps between failed accepts. nbio's accept loop retries
// at once on any error but a timeout, so out of file descriptors (EMFILE)
// with a client waiting in the backlog it would spin a core until a
// descriptor freed up; here it waits, and the client is accepted when one
// does.
type backoffListener struct {
	net.Listener
	s *Server
}

func (l backoffListener) Accept() (net.Conn, error) {
	var delay time.Duration
	for {
		c, err := l.Listener.Accept()
		if err == nil || errors.Is(err, net.ErrClosed) {
			return c, err
		}
		l.s.m.acceptFails.Inc()
		if delay == 0 {
			delay = acceptBackoffMin
			l.s.log.Warn("accept failed; backing off", "err", err)
		} else {
			delay = min(2*delay, acceptBackoffMax)
		}
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-l.s.stop:
			t.Stop()
			return nil, net.ErrClosed
		}
	}
}
