package protocol

import (
	"encoding/binary"
	"sync"
	"sync/atomic"
)

// WebSocket opcodes (RFC 6455 section 5.2).
const (
	OpText   = 0x1
	OpBinary = 0x2
	OpClose  = 0x8
	OpPing   = 0x9
	OpPong   = 0xA
)

// headroom is room for the longest server frame header (2 + 8 bytes), left
// in front of the payload so the header is written once the length is known
// without moving the payload.
const headroom = 10

// maxPooledFrame keeps unusually large buffers out of the pool, so one big
// message does not pin memory for good.
const maxPooledFrame = 64 << 10

// Frame is one complete server-to-client WebSocket frame in a pooled buffer.
// It is reference-counted so that one encoding can sit in many connections'
// queues at once: whoever keeps a frame Retains it, and Releases it when
// done; the last Release returns the buffer to the pool.
type Frame struct {
	buf  []byte // headroom, then the payload
	off  int    // where the header starts in buf
	refs atomic.Int32

	// z is the compressed form (see Deflated), made at most once under
	// zmu; f holds one reference to it unless it is f itself.
	zmu sync.Mutex
	z   atomic.Pointer[Frame]
}

// pooledCap is the capacity of a pooled frame's buffer; frames with less
// (see Compact) are left to the garbage collector, so the pool keeps
// buffers that fit a typical message.
const pooledCap = 512

var framePool = sync.Pool{New: func() any { return &Frame{buf: make([]byte, headroom, pooledCap)} }}

// newFrame returns an empty frame holding one reference, with buf ready for
// the payload to be appended.
func newFrame() *Frame {
	f := framePool.Get().(*Frame)
	f.buf = f.buf[:headroom]
	f.off = 0
	f.refs.Store(1)
	return f
}

// finish takes b (f.buf with the payload appended) and writes the header of
// a final, unmasked frame with opcode op in front of the payload.
func (f *Frame) finish(b []byte, op byte) *Frame {
	f.buf = b
	n := len(b) - headroom
	switch {
	case n <= 125:
		f.off = headroom - 2
		b[f.off+1] = byte(n)
	case n <= 0xFFFF:
		f.off = headroom - 4
		b[f.off+1] = 126
		binary.BigEndian.PutUint16(b[f.off+2:], uint16(n))
	default:
		f.off = 0
		b[1] = 127
		binary.BigEndian.PutUint64(b[2:], uint64(n))
	}
	b[f.off] = 0x80 | op
	return f
}

// NewFrame returns a frame with opcode op carrying payload, holding one
// reference.
func NewFrame(op byte, payload []byte) *Frame {
	f := newFrame()
	return f.finish(append(f.buf, payload...), op)
}

// Bytes returns the whole frame, header included, as it goes on the wire.
func (f *Frame) Bytes() []byte { return f.buf[f.off:] }

// Payload returns the frame's payload.
func (f *Frame) Payload() []byte { return f.buf[headroom:] }

// Compact returns a copy of f in a buffer of its own length, holding one
// reference, for a frame kept long (history) whose pooled buffer is mostly
// unused: a 200-byte message sits in 512 bytes. It returns f itself if a
// copy would not save a size class, and nil if f is held by anyone but the
// caller, who must make sure no one can Retain f meanwhile.
func (f *Frame) Compact() *Frame {
	if f.refs.Load() != 1 {
		return nil
	}
	if 2*len(f.buf) > cap(f.buf) {
		return f
	}
	c := &Frame{buf: make([]byte, len(f.buf)), off: f.off}
	copy(c.buf, f.buf)
	c.refs.Store(1)
	return c
}

// Retain adds n references; each must be matched by a Release.
func (f *Frame) Retain(n int) { f.refs.Add(int32(n)) }

// Release drops one reference; the frame must not be used after its last.
func (f *Frame) Release() {
	switch n := f.refs.Add(-1); {
	case n == 0:
		if z := f.z.Swap(nil); z != nil && z != f {
			z.Release()
		}
		if c := cap(f.buf); c >= pooledCap && c <= maxPooledFrame {
			framePool.Put(f)
		}
	case n < 0:
		panic("protocol: frame released more often than retained")
	}
}
