package loop

import (
	"sync"
	"testing"
)

// TestReuseGuardSkipsFreshFds checks that the fd-reuse barrier runs only
// for an fd number registered before, and that it completes through the
// poller when it runs.
func TestReuseGuardSkipsFreshFds(t *testing.T) {
	s := startServer(t, Config{})
	g := s.reuse.Load()
	if g == nil {
		t.Fatal("no reuse guard")
	}
	fd := len(g.used)*64 - 1 // far above any fd this test opens
	p := g.probes[fd%len(g.probes)]
	sent := func() uint64 {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.sent
	}
	before := sent()
	g.wait(fd)
	if got := sent(); got != before {
		t.Fatalf("first use of fd %d ran the barrier (%d probes sent, want %d)", fd, got, before)
	}
	g.wait(fd)
	if got := sent(); got != before+1 {
		t.Fatalf("reuse of fd %d: %d probes sent, want %d", fd, got, before+1)
	}
	if got := p.recv.Load(); got != before+1 {
		t.Fatalf("barrier returned before the poller read the probe: %d of %d", got, before+1)
	}
}

// TestReuseGuardWaitsConcurrently checks that many connections can wait on
// one poller's barrier at once and every one of them passes it (none times
// out), with every byte written read by the poller. A byte per waiter
// would fill the socket pair after a few hundred, and the writer would
// block holding the lock the poller needs to read them.
func TestReuseGuardWaitsConcurrently(t *testing.T) {
	s := startServer(t, Config{})
	g := s.reuse.Load()
	if g == nil {
		t.Fatal("no reuse guard")
	}
	fd := len(g.used)*64 - 1
	g.wait(fd) // first use
	const waiters = 1000
	var wg sync.WaitGroup
	passed := make(chan bool, waiters)
	for range waiters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			passed <- g.wait(fd)
		}()
	}
	wg.Wait()
	close(passed)
	for ok := range passed {
		if !ok {
			t.Fatal("a concurrent barrier wait timed out")
		}
	}
	p := g.probes[fd%len(g.probes)]
	p.mu.Lock()
	sent := p.sent
	p.mu.Unlock()
	if got := p.recv.Load(); got != sent {
		t.Fatalf("poller read %d of %d probe bytes", got, sent)
	}
}

// wait is what guardedListener does for fd: the barrier for a number
// registered before, nothing for a new one.
func (g *reuseGuard) wait(fd int) bool {
	return g.firstUse(fd) || g.barrier(fd, nil)
}
