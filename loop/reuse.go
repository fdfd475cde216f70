package loop

import (
	"errors"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/lesismal/nbio"
)

// fd reuse guard: a workaround for a race in nbio v1.6.12 that dropped
// about 1 in 5,000 fresh connections under churn with no HTTP response
// (NBIO.md section 11; TestNoRaceHandshakeChurn reproduces it).
//
// The cause, confirmed with an instrumented nbio: a poller gets a batch of
// events from epoll_wait, among them EPOLLERR|EPOLLHUP for a socket whose
// peer reset it. Before the poller reaches that event, another goroutine
// closes the socket (nbhttp's executor failing to write a response to the
// reset peer closes it on the spot), the acceptor is given the same fd
// number for a new connection and registers it, and the poller then
// applies the old socket's error bits to the new connection, which it
// closes before reading its request. The dropped connections were
// ESTABLISHED with no socket error when nbio closed them.
//
// The guard runs in nbhttp's OnOpen hook, after the new socket has its fd
// number and before nbio registers it, and waits until the poller that
// will own the fd has finished every batch it got from epoll_wait before
// now: it writes a byte to a socket pair registered with that poller and
// waits for the poller to read it. A batch returned after the old socket
// was closed cannot hold its events (closing removes it from epoll), so
// once older batches are done no stale event can reach the new connection.
// The cost is one write and two wake-ups (the poller's and the
// acceptor's) per accepted connection whose fd number was registered
// with a poller before; a number in use for the first time cannot have
// stale events, so a ramp of new connections pays nothing.
type reuseGuard struct {
	mu     sync.Mutex // one barrier at a time
	probes []*reuseProbe
	// used has a bit per fd number ever registered with a poller.
	used []atomic.Uint64
}

// reuseProbe is one poller's socket pair: nbc is registered with the
// poller, peer is the end the guard writes to.
type reuseProbe struct {
	nbc  *nbio.Conn
	peer int
	sent uint64        // bytes written; guarded by reuseGuard.mu
	recv atomic.Uint64 // bytes the poller has read
	wake chan struct{}
}

// reuseBarrierTimeout bounds the wait on a stuck or stopping poller; past
// it the connection is registered anyway.
const reuseBarrierTimeout = 200 * time.Millisecond

// newReuseGuard registers one probe with each of e's pollers. It must run
// after the engine has started.
func newReuseGuard(e *nbio.Engine, pollers int) (*reuseGuard, error) {
	g := &reuseGuard{probes: make([]*reuseProbe, pollers), used: make([]atomic.Uint64, (nbio.MaxOpenFiles+63)/64)}
	var spare []*reuseProbe // probes on a poller that already has one
	var fillers []int       // fds held to shift the next probe's number
	defer func() {
		for _, p := range spare {
			p.close()
		}
		for _, fd := range fillers {
			_ = syscall.Close(fd)
		}
	}()
	for missing, tries := pollers, 0; missing > 0; tries++ {
		if tries > 4*pollers+16 {
			g.close()
			return nil, errors.New("loop: could not place an fd-reuse probe on every poller")
		}
		p, err := newReuseProbe(e)
		if err != nil {
			g.close()
			return nil, err
		}
		g.firstUse(p.nbc.Hash())
		// nbio picks the poller by fd number, and new fds take the lowest
		// free numbers in a fixed pattern: keeping the spare and one more
		// fd open moves the next probe to another number.
		if i := p.nbc.Hash() % pollers; g.probes[i] == nil {
			g.probes[i] = p
			missing--
		} else {
			spare = append(spare, p)
			if fd, err := syscall.Dup(p.peer); err == nil {
				fillers = append(fillers, fd)
			}
		}
	}
	return g, nil
}

func newReuseProbe(e *nbio.Engine) (*reuseProbe, error) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fds[0]), "nbchat-reuse-probe")
	nc, err := net.FileConn(f)
	_ = f.Close()
	if err != nil {
		_ = syscall.Close(fds[1])
		return nil, err
	}
	p := &reuseProbe{peer: fds[1], wake: make(chan struct{}, 1)}
	nbc, err := e.AddConn(nc)
	if err != nil {
		_ = syscall.Close(fds[1])
		return nil, err
	}
	p.nbc = nbc
	nbc.OnData(func(_ *nbio.Conn, data []byte) {
		p.recv.Add(uint64(len(data)))
		select {
		case p.wake <- struct{}{}:
		default:
		}
	})
	return p, nil
}

// firstUse records that fd is registered with a poller and reports
// whether it is the first time.
func (g *reuseGuard) firstUse(fd int) bool {
	if fd < 0 || fd/64 >= len(g.used) {
		return false
	}
	bit := uint64(1) << (fd % 64)
	return g.used[fd/64].Or(bit)&bit == 0
}

// wait returns once the poller owning fd has finished the batches it had
// taken from epoll_wait when wait was called, or after the timeout. An fd
// number never registered before returns at once.
func (g *reuseGuard) wait(fd int) {
	if g.firstUse(fd) {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	p := g.probes[fd%len(g.probes)]
	p.sent++
	want := p.sent
	if _, err := syscall.Write(p.peer, []byte{0}); err != nil {
		return
	}
	t := time.NewTimer(reuseBarrierTimeout)
	defer t.Stop()
	for p.recv.Load() < want {
		select {
		case <-p.wake:
		case <-t.C:
			return
		}
	}
}

func (g *reuseGuard) close() {
	for _, p := range g.probes {
		if p != nil {
			p.close()
		}
	}
}

func (p *reuseProbe) close() {
	_ = p.nbc.Close()
	_ = syscall.Close(p.peer)
}

// guardReuse, from onOpen, runs on the accepting goroutine
// before the connection is registered with its poller.
func (s *Server) guardReuse(nbc *nbio.Conn) {
	if g := s.reuse.Load(); g != nil {
		g.wait(nbc.Hash())
	}
}
