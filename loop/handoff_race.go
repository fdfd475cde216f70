//go:build race

package loop

import (
	"sync/atomic"

	"github.com/lesismal/nbio"
	"github.com/lesismal/nbio/nbhttp"
)

// nbio hands an accepted connection from its accept goroutine to a poller
// by registering the socket with epoll, a hand-off the race detector cannot
// see, so it reports races between the two inside nbio and net. Under -race
// only, an atomic store when the connection is registered and a load before
// its data is handled make the hand-off visible.
var handoff [1024]atomic.Uint32

func watchHandoff(e *nbhttp.Engine) {
	e.Engine.OnOpen(func(c *nbio.Conn) { handoff[c.Hash()%len(handoff)].Add(1) })
}

// handoffSeen is called before a connection's data is handled.
func handoffSeen(c *nbio.Conn) { handoff[c.Hash()%len(handoff)].Load() }
