package loop

import "testing"

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
		g.mu.Lock()
		defer g.mu.Unlock()
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
