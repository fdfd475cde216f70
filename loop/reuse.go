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
// The guard runs between accept and registration (guardedListener), once
// the new socket has its fd number, and waits until the poller that will
// own the fd has finished every batch it got from epoll_wait before now:
// it writes a byte to a socket pair registered with that poller and waits
// for the poller to read it. A batch returned after the old socket was
// closed cannot hold its events (closing removes it from epoll), so once
// older batches are done no stale event can reach the new connection.
// The cost is one write and two wake-ups (the poller's and the waiting
// goroutine's) per accepted connection whose fd number was registered
// with a poller before; a number in use for the first time cannot have
// stale events, so a ramp of new connections pays nothing.
type reuseGuard struct {
	probes []*reuseProbe
	// used has a bit per fd number ever registered with a poller.
	used []atomic.Uint64
}

// reuseProbe is one poller's socket pair: nbc is registered with the
// poller, peer is the end the guard writes to. At most one byte is in
// flight, so a write never fills the socket and blocks; connections that
// arrive while it is need the next one, which the poller writes when it
// reads this one, and share it.
type reuseProbe struct {
	nbc  *nbio.Conn
	peer int
	recv atomic.Uint64 // bytes the poller has read

	mu       sync.Mutex
	sent     uint64        // bytes written
	inflight bool          // a byte is written and not yet read
	next     bool          // a waiter needs a byte written after the one in flight
	read     chan struct{} // closed and replaced when the poller reads
}

// reuseBarrierTimeout bounds the wait on a stuck poller; past it the
// connection is registered anyway. The wait is off the accept loop, so it
// can be long: three nodes on two cores in a reconnect storm had poller
// batches past 200 ms, and registering early let nbio drop connections.
const reuseBarrierTimeout = 5 * time.Second

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
	p := &reuseProbe{peer: fds[1], read: make(chan struct{})}
	nbc, err := e.AddConn(nc)
	if err != nil {
		_ = syscall.Close(fds[1])
		return nil, err
	}
	p.nbc = nbc
	nbc.OnData(func(_ *nbio.Conn, data []byte) {
		p.recv.Add(uint64(len(data)))
		p.mu.Lock()
		p.inflight = false
		if p.next {
			p.next = false
			_ = p.writeLocked()
		}
		close(p.read)
		p.read = make(chan struct{})
		p.mu.Unlock()
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

// barrier returns once the poller owning fd has finished the batches it had
// taken from epoll_wait when barrier was called, or after the timeout or
// once stop is closed. It reports whether the barrier passed.
func (g *reuseGuard) barrier(fd int, stop <-chan struct{}) bool {
	p := g.probes[fd%len(g.probes)]
	p.mu.Lock()
	// The byte this connection needs is one written after it got its fd:
	// a byte in flight may be older, so it is the next one, written now or
	// by the poller when it reads the one in flight.
	want, read := p.sent+1, p.read
	if p.inflight {
		p.next = true
	} else if !p.writeLocked() {
		p.mu.Unlock()
		return false
	}
	p.mu.Unlock()
	t := time.NewTimer(reuseBarrierTimeout)
	defer t.Stop()
	for p.recv.Load() < want {
		select {
		case <-read:
			p.mu.Lock()
			read = p.read
			p.mu.Unlock()
		case <-t.C:
			return false
		case <-stop:
			return false
		}
	}
	return true
}

// writeLocked sends one byte; p.mu must be held. After a failed write
// the waiters for the next byte run into their timeout.
func (p *reuseProbe) writeLocked() bool {
	if _, err := syscall.Write(p.peer, []byte{0}); err != nil {
		return false
	}
	p.sent++
	p.inflight = true
	return true
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

// guardedListener registers nbhttp's plain connections itself, as nbio
// connections (nbio dups the accepted socket, and the dup is the fd number
// the poller will see), so its Accept returns only errors. A connection
// whose number was registered before waits for the barrier on a goroutine
// of its own and then registers itself, so the accept loop never waits on a
// poller: in a reconnect storm every number is reused, and one barrier after
// another, each waiting for the poller's current batch, let the listen
// backlog overflow (clients then wait out a 1 s SYN retry).
type guardedListener struct {
	net.Listener
	s *Server
}

func (l guardedListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return c, err
		}
		nbc, err := nbio.NBConn(c)
		if err != nil {
			_ = c.Close()
			continue
		}
		g := l.s.reuse.Load()
		if g == nil || g.firstUse(nbc.Hash()) {
			l.s.register(nbc)
			continue
		}
		select {
		case l.s.waiting <- struct{}{}:
			go l.s.addAfterBarrier(g, nbc)
		default: // enough are waiting already: this one waits in line
			l.s.barrier(g, nbc)
			l.s.register(nbc)
		}
	}
}

// addAfterBarrier registers nbc once no stale event can reach it.
func (s *Server) addAfterBarrier(g *reuseGuard, nbc *nbio.Conn) {
	s.barrier(g, nbc)
	<-s.waiting
	s.register(nbc)
}

// register hands a plain connection to its poller. It does what nbhttp's
// registration does (count it against MaxLoad, bound the time to its first
// request) but leaves out nbhttp's parser: most first reads are plain
// upgrades that fastUpgrade answers, so the parser is made only for the
// rest (onData).
func (s *Server) register(nbc *nbio.Conn) {
	select {
	case <-s.stop:
		_ = nbc.Close() // shutting down: nbio is closing what it has
		return
	default:
	}
	// Past nbio's table (fd too high), AddConn would close it without
	// calling onClose; a closed Conn not yet added does not either.
	if s.plain.Add(1) > int64(s.engine.MaxLoad) || nbc.Hash() >= nbio.MaxOpenFiles {
		s.plain.Add(-1)
		_ = nbc.Close()
		return
	}
	nbc.OnData(s.engine.DataHandler) // the session's Parse, once there is one (onData)
	// Queued before its poller can read it: the first read takes it off
	// (guardedListener has already kept stale events away from a reused
	// fd number).
	// The next tick starts the timeout's first interval: a deadline is at
	// least the whole timeout away.
	by := s.tick.Load() + 1 + int64((s.cfg.HandshakeTimeout+tickInterval-1)/tickInterval)
	queued := s.handshakes.push(nbc, by)
	if _, err := s.engine.Engine.AddConn(nbc); err != nil {
		return // closed, and onClose gave its place back
	}
	if !queued {
		_ = nbc.SetReadDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	}
}

// barrier runs g's barrier for nbc and counts one that timed out.
func (s *Server) barrier(g *reuseGuard, nbc *nbio.Conn) {
	if !g.barrier(nbc.Hash(), s.stop) {
		select {
		case <-s.stop:
		default:
			s.m.reuseLate.Inc()
		}
	}
}

// maxBarrierWaiters bounds the connections waiting for a barrier at once.
const maxBarrierWaiters = 1024
