package cluster

import (
	"errors"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// maxOutbox bounds the bytes waiting in the outbox, as ReconnectBufSize
// bounds nats.go's own buffer while it reconnects.
const maxOutbox = 64 << 20

var errOutboxFull = errors.New("cluster: NATS is not taking messages")

// outbox hands what this node sends (Send, Deliver) to nats.go from one
// goroutine, in the order it was queued. Rooms queue from the pollers, and
// nats.go publishes under its connection's lock, which it also holds while
// it writes to a link that stopped draining and while it dials and
// handshakes on reconnect; queued here, a poller never waits for NATS.
type outbox struct {
	n      *Node
	mu     sync.Mutex
	q      []outMsg
	size   int // bytes queued or being published
	closed bool
	wake   chan struct{}
	quit   chan struct{}
	done   chan struct{}
}

type outMsg struct {
	subj string
	buf  *[]byte // from Node.bufs
}

func newOutbox(n *Node) *outbox {
	o := &outbox{n: n, wake: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{})}
	go o.run()
	return o
}

// put queues buf for subj; the outbox returns buf to the pool once sent.
func (o *outbox) put(subj string, buf *[]byte) error {
	o.mu.Lock()
	if o.closed {
		o.mu.Unlock()
		o.n.bufs.Put(buf)
		return nats.ErrConnectionClosed
	}
	if o.size+len(*buf) > maxOutbox {
		o.mu.Unlock()
		o.n.bufs.Put(buf)
		return errOutboxFull
	}
	o.q = append(o.q, outMsg{subj, buf})
	o.size += len(*buf)
	o.mu.Unlock()
	select {
	case o.wake <- struct{}{}:
	default:
	}
	return nil
}

func (o *outbox) run() {
	defer close(o.done)
	var batch []outMsg
	for {
		select {
		case <-o.wake:
		case <-o.quit:
			return
		}
		o.mu.Lock()
		batch, o.q = o.q, batch[:0]
		o.mu.Unlock()
		sent := 0
		for i, m := range batch {
			// nats.go copies the payload into its buffer before returning.
			if o.n.nc.Publish(m.subj, *m.buf) == nil {
				o.n.sent.Add(1)
			} else {
				o.n.dropped.Add(1)
			}
			sent += len(*m.buf)
			o.n.bufs.Put(m.buf)
			batch[i] = outMsg{}
		}
		o.mu.Lock()
		o.size -= sent
		o.mu.Unlock()
	}
}

// flush waits, at most d, until everything queued has gone to nats.go.
func (o *outbox) flush(d time.Duration) {
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		o.mu.Lock()
		empty := o.size == 0
		o.mu.Unlock()
		if empty {
			return
		}
	}
}

// close stops the outbox after flushing it for at most d.
func (o *outbox) close(d time.Duration) {
	o.flush(d)
	o.mu.Lock()
	if !o.closed {
		o.closed = true
		close(o.quit)
	}
	o.mu.Unlock()
	<-o.done
}
