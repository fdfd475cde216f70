package loop

import (
	"runtime"
	"time"
)

// pollerYield makes a poller's goroutine pass through the scheduler now
// and then. nbio's poller never leaves its goroutine: it waits in
// epoll_wait and handles what it gets, so the runtime sees the same
// goroutine on its P forever. Past 10 ms of that, Go's sysmon preempts it
// and takes the P back from the system call, and every such retake sets
// sysmon polling at 20 us for a millisecond or more: about a hundred
// retakes a second per busy poller, each with fifty naps, each a timer
// and a context switch. A yield every few milliseconds, from the
// poller's own data handler, shows the runtime a scheduled goroutine.
type pollerYield struct {
	last int64 // unix nanoseconds; only the poller's goroutine touches it
	_    [56]byte
}

// yieldEvery is well under sysmon's 10 ms forced-preemption period.
const yieldEvery = int64(5 * time.Millisecond)

func (y *pollerYield) maybe() {
	now := time.Now().UnixNano()
	if now-y.last < yieldEvery {
		return
	}
	y.last = now
	runtime.Gosched()
}
