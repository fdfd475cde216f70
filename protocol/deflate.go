package protocol

import (
	"compress/flate"
	"io"
	"sync"
)

// permessage-deflate (RFC 7692) without context takeover: every message is
// compressed on its own, so one compressed frame can go to every member of
// a room that negotiated the extension.

// MinDeflate is the smallest payload worth compressing; smaller JSON
// messages barely shrink and would cost CPU for nothing.
const MinDeflate = 128

// deflateTail is what a sync flush appends and RFC 7692 section 7.2.1 says
// to strip.
var deflateTail = []byte{0x00, 0x00, 0xff, 0xff}

var flateWriters = sync.Pool{New: func() any {
	w, _ := flate.NewWriter(nil, flate.BestSpeed)
	return w
}}

// appendWriter appends what is written to b.
type appendWriter struct{ b []byte }

func (w *appendWriter) Write(p []byte) (int, error) {
	w.b = append(w.b, p...)
	return len(p), nil
}

var appendWriters = sync.Pool{New: func() any { return new(appendWriter) }}

// Deflated returns the frame compressed with permessage-deflate (RSV1 set),
// computed on first use and shared by every caller: a broadcast is
// compressed once, not once per recipient. Frames that are not text, are
// small, or do not shrink are returned as they are (RSV1 clear is always
// valid). The result is owned by f: a caller that keeps it must Retain it.
func (f *Frame) Deflated() *Frame {
	if z := f.z.Load(); z != nil {
		return z
	}
	f.zmu.Lock()
	defer f.zmu.Unlock()
	if z := f.z.Load(); z != nil {
		return z
	}
	z := f.deflate()
	f.z.Store(z)
	return z
}

func (f *Frame) deflate() *Frame {
	p := f.Payload()
	if f.buf[f.off]&0x0F != OpText || len(p) < MinDeflate {
		return f
	}
	z := newFrame()
	aw := appendWriters.Get().(*appendWriter)
	aw.b = z.buf
	fw := flateWriters.Get().(*flate.Writer)
	fw.Reset(aw)
	_, _ = fw.Write(p)
	_ = fw.Flush()
	b := aw.b
	aw.b = nil
	appendWriters.Put(aw)
	flateWriters.Put(fw)
	if n := len(b) - len(deflateTail); n >= headroom && string(b[n:]) == string(deflateTail) {
		b = b[:n]
	}
	if len(b)-headroom >= len(p) {
		z.buf = b
		z.Release()
		return f
	}
	z.finish(b, OpText)
	z.buf[z.off] |= 0x40 // RSV1: this message is compressed
	return z
}

var flateReaders = sync.Pool{New: func() any { return flate.NewReader(nil) }}

// tailReader reads the compressed payload and then the stripped tail.
type tailReader struct {
	p    []byte
	tail int
}

func (r *tailReader) Read(b []byte) (int, error) {
	if len(r.p) > 0 {
		n := copy(b, r.p)
		r.p = r.p[n:]
		return n, nil
	}
	if r.tail < len(deflateTail) {
		n := copy(b, deflateTail[r.tail:])
		r.tail += n
		return n, nil
	}
	return 0, io.EOF
}

// ErrInflatedTooLarge reports a compressed message that inflates past the
// limit (a deflate bomb, or just too big).
var ErrInflatedTooLarge = &Error{Code: CodeTooLarge, Message: "message inflates past the size limit"}

// Inflate appends the decompressed form of a permessage-deflate payload to
// dst, reading at most limit bytes of output.
func Inflate(dst, payload []byte, limit int) ([]byte, error) {
	tr := &tailReader{p: payload}
	fr := flateReaders.Get().(io.ReadCloser)
	defer flateReaders.Put(fr)
	if err := fr.(flate.Resetter).Reset(tr, nil); err != nil {
		return dst, err
	}
	start := len(dst)
	for {
		if len(dst)-start > limit {
			return dst, ErrInflatedTooLarge
		}
		if cap(dst) == len(dst) {
			dst = append(dst, 0)[:len(dst)]
		}
		n, err := fr.Read(dst[len(dst):cap(dst)])
		dst = dst[:len(dst)+n]
		if err == io.EOF || err == io.ErrUnexpectedEOF && tr.tail == len(deflateTail) && len(tr.p) == 0 {
			if len(dst)-start > limit {
				return dst, ErrInflatedTooLarge
			}
			return dst, nil
		}
		if err != nil {
			return dst, err
		}
	}
}
