package room

import "nbchat/protocol"

// history keeps the latest messages of a room, or of a user's direct
// messages, as the encoded frames that were sent, so catching a client up
// writes existing bytes. Seqs in it are consecutive: entry i has seq
// first+i. It is not safe for concurrent use; its owner's lock guards it.
type history struct {
	buf   []histEntry // ring, grown up to max
	start int         // index of the oldest entry
	n     int
	first uint64 // seq of the oldest entry
	max   int
	// compacted is the seq below which entries were given to compact.
	compacted uint64
}

type histEntry struct {
	f  *protocol.Frame // holds one reference
	ts int64           // milliseconds since the epoch
}

// add keeps f, taking over one reference, as the message numbered seq.
func (h *history) add(f *protocol.Frame, seq uint64, ts int64) {
	if h.max <= 0 {
		f.Release()
		return
	}
	if h.n > 0 && seq != h.first+uint64(h.n) {
		// A jump (seqs restored from storage): start over from seq.
		h.clear()
	}
	if h.n == 0 {
		h.first = seq
	}
	if h.n == len(h.buf) {
		if len(h.buf) < h.max {
			h.grow()
		} else {
			h.dropOldest()
		}
	}
	h.buf[(h.start+h.n)%len(h.buf)] = histEntry{f, ts}
	h.n++
}

func (h *history) grow() {
	size := min(max(2*len(h.buf), 16), h.max)
	buf := make([]histEntry, size)
	for i := range h.n {
		buf[i] = h.buf[(h.start+i)%len(h.buf)]
	}
	h.buf, h.start = buf, 0
}

func (h *history) dropOldest() {
	e := &h.buf[h.start]
	e.f.Release()
	*e = histEntry{}
	h.start = (h.start + 1) % len(h.buf)
	h.n--
	h.first++
}

// expire drops entries older than cutoff (milliseconds since the epoch).
func (h *history) expire(cutoff int64) {
	for h.n > 0 && h.buf[h.start].ts < cutoff {
		h.dropOldest()
	}
	if h.n == 0 {
		h.buf, h.start = nil, 0
	}
}

func (h *history) clear() {
	for h.n > 0 {
		h.dropOldest()
	}
	h.buf, h.start, h.compacted = nil, 0, 0
}

// compact moves entries added since the last call out of their pooled
// buffers into ones of their own size, stopping at the first still queued
// to a connection (it is tried again next time). The caller holds the lock
// every Retain of a kept frame happens under.
func (h *history) compact() {
	for s := max(h.compacted, h.first); s < h.next(); s++ {
		e := h.at(s)
		c := e.f.Compact()
		if c == nil {
			return
		}
		if c != e.f {
			e.f.Release()
			e.f = c
		}
		h.compacted = s + 1
	}
}

// next returns the seq the next entry would get, first+n.
func (h *history) next() uint64 { return h.first + uint64(h.n) }

// at returns the entry with seq, which must be in [first, next()).
func (h *history) at(seq uint64) *histEntry {
	return &h.buf[(h.start+int(seq-h.first))%len(h.buf)]
}

// covers reports whether every message after seq up to latest is kept.
func (h *history) covers(seq, latest uint64) bool {
	return seq >= latest || h.n > 0 && seq+1 >= h.first && h.next() == latest+1
}

// since sends m every kept message after seq, oldest first.
func (h *history) since(m Member, seq uint64) {
	if h.n == 0 {
		return
	}
	for s := max(seq+1, h.first); s < h.next(); s++ {
		e := h.at(s)
		e.f.Retain(1)
		m.Send(e.f)
	}
}

// latest sends m the newest n messages, oldest first.
func (h *history) latest(m Member, n int) {
	n = min(n, h.n)
	for s := h.next() - uint64(n); s < h.next(); s++ {
		e := h.at(s)
		e.f.Retain(1)
		m.Send(e.f)
	}
}

// page yields the payloads of up to limit messages before seq before
// (before <= 0: the newest), oldest first, and whether older ones exist.
func (h *history) page(before int64, limit int) (func(func([]byte) bool), bool) {
	end := h.next()
	if before > 0 && uint64(before) < end {
		end = uint64(before)
	}
	if end < h.first {
		end = h.first
	}
	start := h.first
	if end-start > uint64(limit) {
		start = end - uint64(limit)
	}
	return func(yield func([]byte) bool) {
		for s := start; s < end; s++ {
			if !yield(h.at(s).f.Payload()) {
				return
			}
		}
	}, start > h.first
}
