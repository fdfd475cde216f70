package loop

import (
	"encoding/binary"
	"sync"
	"unicode/utf8"
)

// Close codes from RFC 6455 section 7.4.1 that the server sends.
const (
	CloseNormal         = 1000
	CloseGoingAway      = 1001
	CloseProtocolError  = 1002
	CloseUnsupported    = 1003
	CloseNoStatus       = 1005 // never sent; reported when a close frame carries no code
	CloseInvalidPayload = 1007
	ClosePolicy         = 1008
	CloseTooBig         = 1009
	CloseInternalError  = 1011
	CloseTryAgainLater  = 1013
)

// ProtocolError is a violation that fails the WebSocket connection; Code is the close code to send.
type ProtocolError struct {
	Code   int
	Reason string
}

// Error returns the reason with the package prefix.
func (e *ProtocolError) Error() string { return "loop: " + e.Reason }

// frameHandler receives what the decoder decodes. Payload slices are valid only during the call
// (they point into the caller's read buffer or the decoder's reassembly buffer).
type frameHandler interface {
	onMessage(text, compressed bool, payload []byte) // a complete data message; text payloads are valid UTF-8 unless compressed
	onPing(payload []byte)
	onPong(payload []byte)
	onClose(code int, reason []byte) // code is CloseNoStatus when the frame had no payload; code and reason already validated
}

// Opcodes (RFC 6455 section 5.2) and limits; the dec prefix keeps them apart from the encoder's names.
const (
	decOpContinuation    = 0x0
	decOpText            = 0x1
	decOpBinary          = 0x2
	decOpClose           = 0x8
	decOpPing            = 0x9
	decOpPong            = 0xa
	decDefaultMaxMessage = 65536
	decMaxControl        = 125       // RFC 6455 section 5.5
	decMaxHeader         = 2 + 8 + 4 // base, 64-bit length, mask key
	decInitialBuf        = 1024      // starting capacity of pooled buffers
	decMaxPooledBuf      = 256 << 10 // bigger buffers go to the GC rather than pin memory in the pool
)

// Decoder stages.
const (
	decStageHeader  = iota // gathering the next frame's header into hdr
	decStagePayload        // consuming the current frame's payload
	decStageClosed         // a close frame was delivered; everything after it is ignored
	decStageFailed         // a ProtocolError was returned; err holds it
)

// decoderPool holds reassembly buffers, so that only connections in the middle of a message hold one.
var decoderPool = sync.Pool{New: func() any {
	b := make([]byte, 0, decInitialBuf)
	return &b
}}

// decoder is a resumable RFC 6455 server-side frame decoder. It is driven by one goroutine at a time.
type decoder struct {
	err       error   // sticky, set with stage decStageFailed
	remaining int     // payload bytes of the current frame not yet seen
	msgSize   int     // declared payload bytes of the current message so far, current frame included
	msg       *[]byte // pooled reassembly buffer; nil unless the message spans frames or feeds
	ctl       *[]byte // pooled buffer for a control payload split across feeds; nil otherwise

	// The small fields last, so that a connection's decoder packs into 88 bytes.
	maxMessage int32 // largest message payload in bytes (sum of fragments); 0 means 65536
	allowRSV1  bool  // permessage-deflate negotiated: RSV1 allowed on the first frame of a data message
	stage      uint8

	// The current frame. hdr is a fixed array so a header split across reads needs no buffer.
	hdr     [decMaxHeader]byte
	hdrLen  uint8 // header bytes gathered so far
	hdrSize uint8 // full header size; known once hdrLen >= 2
	fin     bool
	rsv1    bool
	opcode  byte
	key     [4]byte
	keyPos  uint8 // key index of the next payload byte, for a payload resumed across feeds
	resumed bool  // part of the payload came in an earlier feed and sits in msg or ctl

	// The current data message.
	msgOpen       bool
	msgText       bool
	msgCompressed bool
	checkUTF8     bool // text and not compressed
	utf8          utf8Stream
}

// feed decodes every complete frame in data and calls h for each, in order.
// It keeps any partial frame (copying only the incomplete tail) and resumes on the next call.
// It returns a *ProtocolError on the first violation and must not be called again after that.
// After onClose it stops and ignores the rest of data and any later call (returns nil).
// Payloads are unmasked in place, so data is modified.
func (d *decoder) feed(data []byte, h frameHandler) error {
	switch d.stage {
	case decStageFailed:
		return d.err
	case decStageClosed:
		return nil
	}
	for {
		if d.stage == decStageHeader {
			if len(data) == 0 {
				return nil
			}
			n, err := d.readHeader(data)
			data = data[n:]
			if err != nil {
				return d.fail(err)
			}
			if d.stage == decStageHeader {
				return nil // header incomplete and data used up
			}
		}
		var err error
		if !d.resumed && d.remaining <= len(data) {
			// The whole payload is here: unmask it in place and pass it on without a copy.
			p := data[:d.remaining]
			data = data[d.remaining:]
			xorMask(d.key, 0, p)
			err = d.endFrame(p, true, h)
		} else {
			if len(data) == 0 {
				return nil
			}
			n := min(d.remaining, len(data))
			p := data[:n]
			data = data[n:]
			d.keyPos = uint8(xorMask(d.key, int(d.keyPos), p))
			d.remaining -= n
			d.resumed = true
			if err := d.keep(p); err != nil {
				return d.fail(err)
			}
			if d.remaining > 0 {
				return nil
			}
			buf := d.msg
			if d.opcode >= decOpClose {
				buf = d.ctl
			}
			err = d.endFrame(*buf, false, h)
		}
		if err != nil {
			return d.fail(err)
		}
		if d.stage == decStageClosed {
			return nil
		}
		d.stage = decStageHeader
		d.hdrLen = 0
	}
}

// release returns the decoder's buffers to their pools; the decoder may be reused after it.
// Configuration (maxMessage, allowRSV1) is kept.
func (d *decoder) release() {
	d.putBuffers()
	*d = decoder{maxMessage: d.maxMessage, allowRSV1: d.allowRSV1}
}

// fail makes err sticky and hands the buffers back: the connection is going away.
func (d *decoder) fail(err error) error {
	d.stage = decStageFailed
	d.err = err
	d.putBuffers()
	return err
}

// putBuffers returns msg and ctl to the pool.
func (d *decoder) putBuffers() {
	putDecoderBuf(&d.msg)
	putDecoderBuf(&d.ctl)
}

// readHeader gathers header bytes from data and returns how many it used. Violations visible in
// the first two bytes are reported as soon as those arrive, whatever the read boundaries.
func (d *decoder) readHeader(data []byte) (int, error) {
	n := 0
	if d.hdrLen < 2 {
		n = copy(d.hdr[d.hdrLen:2], data)
		d.hdrLen += uint8(n)
		if d.hdrLen < 2 {
			return n, nil
		}
		if err := d.checkBase(); err != nil {
			return n, err
		}
	}
	m := copy(d.hdr[d.hdrLen:d.hdrSize], data[n:])
	d.hdrLen += uint8(m)
	n += m
	if d.hdrLen < d.hdrSize {
		return n, nil
	}
	return n, d.startFrame()
}

// checkBase validates the first two header bytes against the connection state and sets hdrSize.
func (d *decoder) checkBase() error {
	b0, b1 := d.hdr[0], d.hdr[1]
	d.fin = b0&0x80 != 0
	d.opcode = b0 & 0x0f
	rsv1 := b0&0x40 != 0
	if b0&0x30 != 0 {
		return &ProtocolError{CloseProtocolError, "RSV2 or RSV3 set"}
	}
	switch d.opcode {
	case decOpContinuation, decOpText, decOpBinary, decOpClose, decOpPing, decOpPong:
	default:
		return &ProtocolError{CloseProtocolError, "reserved opcode"}
	}
	control := d.opcode >= decOpClose
	if control && !d.fin {
		return &ProtocolError{CloseProtocolError, "fragmented control frame"}
	}
	// Minimal length encoding means a length field of 126 or 127 always exceeds 125.
	if control && b1&0x7f > decMaxControl {
		return &ProtocolError{CloseProtocolError, "control frame payload over 125 bytes"}
	}
	if rsv1 && (!d.allowRSV1 || control || d.opcode == decOpContinuation) {
		return &ProtocolError{CloseProtocolError, "RSV1 set outside the first frame of a compressed message"}
	}
	if b1&0x80 == 0 {
		return &ProtocolError{CloseProtocolError, "unmasked client frame"}
	}
	switch {
	case d.opcode == decOpContinuation && !d.msgOpen:
		return &ProtocolError{CloseProtocolError, "continuation frame with no message open"}
	case (d.opcode == decOpText || d.opcode == decOpBinary) && d.msgOpen:
		return &ProtocolError{CloseProtocolError, "new data frame inside a fragmented message"}
	}
	d.hdrSize = 2 + 4 // base and mask key, then any extended length
	if n := b1 & 0x7f; n == 126 {
		d.hdrSize += 2
	} else if n == 127 {
		d.hdrSize += 8
	}
	d.rsv1 = rsv1
	return nil
}

// startFrame decodes the length and mask key of a complete header and enforces the size limit
// before any payload is buffered, so a header announcing 2^62 bytes never allocates.
func (d *decoder) startFrame() error {
	var length uint64
	switch n := d.hdr[1] & 0x7f; n {
	case 126:
		length = uint64(binary.BigEndian.Uint16(d.hdr[2:4]))
	case 127:
		length = binary.BigEndian.Uint64(d.hdr[2:10])
		if length>>63 != 0 {
			return &ProtocolError{CloseProtocolError, "64-bit payload length with the top bit set"}
		}
	default:
		length = uint64(n)
	}
	copy(d.key[:], d.hdr[d.hdrSize-4:d.hdrSize])
	if d.opcode == decOpClose && length == 1 {
		return &ProtocolError{CloseProtocolError, "close frame with a 1-byte payload"}
	}
	if d.opcode < decOpClose {
		size := 0
		if d.opcode == decOpContinuation {
			size = d.msgSize
		}
		limit := int(d.maxMessage)
		if limit <= 0 {
			limit = decDefaultMaxMessage
		}
		if uint64(size)+length > uint64(limit) {
			return &ProtocolError{CloseTooBig, "message too big"}
		}
		if d.opcode != decOpContinuation {
			d.msgOpen = true
			d.msgText = d.opcode == decOpText
			d.msgCompressed = d.rsv1
			// Compressed text is checked by the caller after inflating.
			d.checkUTF8 = d.msgText && !d.rsv1
			d.utf8 = utf8Stream{}
		}
		d.msgSize = size + int(length)
	}
	d.remaining = int(length)
	d.keyPos = 0
	d.resumed = false
	d.stage = decStagePayload
	return nil
}

// keep copies unmasked payload bytes into the frame's buffer, checking message text as it goes so
// that a fragment that cannot become valid UTF-8 fails at once.
func (d *decoder) keep(p []byte) error {
	if d.opcode >= decOpClose {
		d.ctl = appendDecoderBuf(d.ctl, p)
		return nil
	}
	d.msg = appendDecoderBuf(d.msg, p)
	if d.checkUTF8 && !d.utf8.write(p) {
		return &ProtocolError{CloseInvalidPayload, "invalid UTF-8 in text message"}
	}
	return nil
}

// endFrame acts on a frame whose payload p is complete. direct means p is still in the caller's
// data and was not passed to keep.
func (d *decoder) endFrame(p []byte, direct bool, h frameHandler) error {
	switch d.opcode {
	case decOpPing:
		h.onPing(p)
	case decOpPong:
		h.onPong(p)
	case decOpClose:
		return d.endClose(p, h)
	default:
		return d.endData(p, direct, h)
	}
	putDecoderBuf(&d.ctl)
	return nil
}

// endData finishes a data frame, delivering the message when it is the last fragment.
func (d *decoder) endData(p []byte, direct bool, h frameHandler) error {
	if direct && d.fin && d.opcode != decOpContinuation {
		// A whole message in one frame in one read: no copy at all.
		if d.checkUTF8 && !utf8.Valid(p) {
			return &ProtocolError{CloseInvalidPayload, "invalid UTF-8 in text message"}
		}
		d.msgOpen = false
		h.onMessage(d.msgText, d.msgCompressed, p)
		return nil
	}
	if direct {
		if err := d.keep(p); err != nil {
			return err
		}
	}
	if !d.fin {
		return nil
	}
	if d.checkUTF8 && d.utf8.n != 0 {
		return &ProtocolError{CloseInvalidPayload, "text message ends inside a UTF-8 sequence"}
	}
	d.msgOpen = false
	h.onMessage(d.msgText, d.msgCompressed, *d.msg)
	putDecoderBuf(&d.msg)
	return nil
}

// endClose validates a close frame's code and reason, reports it and stops the decoder.
func (d *decoder) endClose(p []byte, h frameHandler) error {
	code, reason := CloseNoStatus, []byte(nil)
	if len(p) >= 2 {
		code, reason = int(binary.BigEndian.Uint16(p)), p[2:]
		if !validCloseCode(code) {
			return &ProtocolError{CloseProtocolError, "invalid close code"}
		}
		if !utf8.Valid(reason) {
			return &ProtocolError{CloseInvalidPayload, "invalid UTF-8 in close reason"}
		}
	}
	d.stage = decStageClosed
	h.onClose(code, reason)
	d.putBuffers() // after the call: reason may point into ctl
	return nil
}

// validCloseCode reports whether a peer may send code (RFC 6455 section 7.4 and the IANA registry).
func validCloseCode(code int) bool {
	switch {
	case code >= 1000 && code <= 1003, code >= 1007 && code <= 1014, code >= 3000 && code <= 4999:
		return true
	}
	return false
}

// appendDecoderBuf appends p to *b, taking a buffer from the pool when b is nil.
func appendDecoderBuf(b *[]byte, p []byte) *[]byte {
	if b == nil {
		b = decoderPool.Get().(*[]byte)
	}
	*b = append(*b, p...)
	return b
}

// putDecoderBuf returns *b to the pool and clears it.
func putDecoderBuf(b **[]byte) {
	if *b == nil {
		return
	}
	if cap(**b) <= decMaxPooledBuf {
		**b = (**b)[:0]
		decoderPool.Put(*b)
	}
	*b = nil
}

// xorMask applies the mask key to b starting at key index pos and returns the next key index.
func xorMask(key [4]byte, pos int, b []byte) int {
	if len(b) >= 8 {
		// Rotate the key so that its first byte lines up with b[0], then work 8 bytes at a time.
		k := uint32(key[pos&3]) | uint32(key[(pos+1)&3])<<8 | uint32(key[(pos+2)&3])<<16 | uint32(key[(pos+3)&3])<<24
		k64 := uint64(k) | uint64(k)<<32
		for len(b) >= 8 {
			binary.LittleEndian.PutUint64(b, binary.LittleEndian.Uint64(b)^k64)
			b = b[8:]
		}
	}
	for i := range b {
		b[i] ^= key[pos&3]
		pos++
	}
	return pos & 3
}

// utf8Stream validates UTF-8 that arrives in pieces, carrying a sequence cut at the end of one
// piece (at most 3 bytes) over to the next.
type utf8Stream struct {
	carry [utf8.UTFMax]byte
	n     uint8
}

// write checks p as the continuation of the stream and reports whether it can still be valid.
// utf8.FullRune is false only for a valid prefix, so bytes that no continuation could make valid
// fail here rather than at the end of the message.
func (s *utf8Stream) write(p []byte) bool {
	for s.n > 0 && len(p) > 0 {
		s.carry[s.n] = p[0]
		s.n++
		p = p[1:]
		if utf8.FullRune(s.carry[:s.n]) {
			if !utf8.Valid(s.carry[:s.n]) {
				return false
			}
			s.n = 0
		}
	}
	end := len(p)
	for k := len(p) - 1; k >= 0 && k >= len(p)-3; k-- {
		if utf8.RuneStart(p[k]) {
			if !utf8.FullRune(p[k:]) {
				end = k
			}
			break
		}
	}
	if !utf8.Valid(p[:end]) {
		return false
	}
	s.n += uint8(copy(s.carry[:], p[end:]))
	return true
}
