package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strconv"
)

// WebSocket opcodes (RFC 6455 section 5.2).
const (
	opCont  = 0x0
	opText  = 0x1
	opBin   = 0x2
	opClose = 0x8
	opPing  = 0x9
	opPong  = 0xA
)

var (
	errFrameTooBig = errors.New("loadtest: frame larger than 16 MiB")
	errBadFrame    = errors.New("loadtest: bad frame header")
)

// maxFrame bounds what one connection may buffer for a half-received frame,
// so a broken server cannot make the generator grow without limit.
const maxFrame = 16 << 20

// maskRand is a small xorshift generator: mask keys only need to be
// unpredictable enough for intermediaries (RFC 6455 10.3), not secure, and
// crypto/rand per frame would dominate the send path.
type maskRand struct{ s uint64 }

func (r *maskRand) next() uint32 {
	if r.s == 0 {
		r.s = 0x9E3779B97F4A7C15
	}
	r.s ^= r.s << 13
	r.s ^= r.s >> 7
	r.s ^= r.s << 17
	return uint32(r.s >> 32)
}

// appendFrameHeader appends a masked client frame header for a payload of n
// bytes and returns the buffer and the mask key.
func appendFrameHeader(buf []byte, op byte, n int, key uint32) []byte {
	buf = append(buf, 0x80|op)
	switch {
	case n < 126:
		buf = append(buf, 0x80|byte(n))
	case n <= 0xFFFF:
		buf = append(buf, 0x80|126, byte(n>>8), byte(n))
	default:
		buf = append(buf, 0x80|127)
		buf = binary.BigEndian.AppendUint64(buf, uint64(n))
	}
	return binary.BigEndian.AppendUint32(buf, key)
}

// maskBytes XORs b with the 4-byte key in place, 8 bytes at a time.
func maskBytes(b []byte, key uint32) {
	var k [4]byte
	binary.BigEndian.PutUint32(k[:], key)
	k8 := uint64(binary.LittleEndian.Uint32(k[:]))
	k8 |= k8 << 32
	i := 0
	for ; i+8 <= len(b); i += 8 {
		v := binary.LittleEndian.Uint64(b[i:])
		binary.LittleEndian.PutUint64(b[i:], v^k8)
	}
	for ; i < len(b); i++ {
		b[i] ^= k[i&3]
	}
}

// appendMasked appends a complete masked frame carrying payload.
func appendMasked(buf []byte, op byte, payload []byte, key uint32) []byte {
	buf = appendFrameHeader(buf, op, len(payload), key)
	start := len(buf)
	buf = append(buf, payload...)
	maskBytes(buf[start:], key)
	return buf
}

// frame is one parsed frame; payload aliases the read buffer.
type frame struct {
	fin     bool
	op      byte
	payload []byte
}

// parseFrame reads one frame from b. It returns the number of bytes used, or
// 0 when b holds only part of a frame. Server frames should be unmasked, but
// a masked one is unmasked in place rather than rejected: the generator
// measures, the server's own tests judge conformance.
func parseFrame(b []byte) (frame, int, error) {
	if len(b) < 2 {
		return frame{}, 0, nil
	}
	f := frame{fin: b[0]&0x80 != 0, op: b[0] & 0x0F}
	if b[0]&0x70 != 0 {
		return f, 0, errBadFrame
	}
	masked := b[1]&0x80 != 0
	n := uint64(b[1] & 0x7F)
	h := 2
	switch n {
	case 126:
		if len(b) < 4 {
			return f, 0, nil
		}
		n = uint64(binary.BigEndian.Uint16(b[2:]))
		h = 4
	case 127:
		if len(b) < 10 {
			return f, 0, nil
		}
		n = binary.BigEndian.Uint64(b[2:])
		h = 10
	}
	if n > maxFrame {
		return f, 0, errFrameTooBig
	}
	var key uint32
	if masked {
		if len(b) < h+4 {
			return f, 0, nil
		}
		key = binary.BigEndian.Uint32(b[h:])
		h += 4
	}
	end := h + int(n)
	if len(b) < end {
		return f, 0, nil
	}
	f.payload = b[h:end]
	if masked {
		maskBytes(f.payload, key)
	}
	return f, end, nil
}

// fields holds the top-level JSON members the generator needs, as slices of
// the frame (strings without quotes, escapes left as they are).
type fields struct {
	typ, room, from, to, text, code, name []byte
	seq, count                            int64
	hasSeq, recovered                     bool
}

// scanJSON fills f from one JSON object without allocating. It understands
// just enough JSON to skip values it does not need (strings with escapes,
// nested arrays and objects); it returns false on anything malformed.
func scanJSON(b []byte, f *fields) bool {
	*f = fields{}
	i := skipWS(b, 0)
	if i >= len(b) || b[i] != '{' {
		return false
	}
	i++
	for {
		i = skipWS(b, i)
		if i >= len(b) {
			return false
		}
		if b[i] == '}' {
			return true
		}
		if b[i] == ',' {
			i++
			continue
		}
		if b[i] != '"' {
			return false
		}
		ks, ke, ok := scanString(b, i)
		if !ok {
			return false
		}
		key := b[ks:ke]
		i = skipWS(b, ke+1)
		if i >= len(b) || b[i] != ':' {
			return false
		}
		i = skipWS(b, i+1)
		if i >= len(b) {
			return false
		}
		if b[i] == '"' {
			vs, ve, ok := scanString(b, i)
			if !ok {
				return false
			}
			f.setString(key, b[vs:ve])
			i = ve + 1
			continue
		}
		ve := skipValue(b, i)
		if ve < 0 {
			return false
		}
		switch string(key) { // no allocation: the compiler compares in place
		case "seq":
			f.seq, f.hasSeq = parseInt(b[i:ve])
		case "count":
			f.count, _ = parseInt(b[i:ve])
		case "recovered":
			f.recovered = string(b[i:ve]) == "true"
		}
		i = ve
	}
}

func (f *fields) setString(key, v []byte) {
	switch string(key) {
	case "type":
		f.typ = v
	case "room":
		f.room = v
	case "from":
		f.from = v
	case "to":
		f.to = v
	case "text":
		f.text = v
	case "code":
		f.code = v
	case "name":
		f.name = v
	}
}

func skipWS(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// scanString returns the bounds of the string body starting at the quote
// b[i]; end is the index of the closing quote.
func scanString(b []byte, i int) (start, end int, ok bool) {
	j := i + 1
	for {
		k := bytes.IndexByte(b[j:], '"') // vectorized: text is the long field
		if k < 0 {
			return 0, 0, false
		}
		j += k
		n := 0 // backslashes right before the quote: odd means escaped
		for p := j - 1; p > i && b[p] == '\\'; p-- {
			n++
		}
		if n%2 == 0 {
			return i + 1, j, true
		}
		j++
	}
}

// skipValue returns the index just after the non-string value at b[i]
// (number, literal, array or object), or -1.
func skipValue(b []byte, i int) int {
	if b[i] != '[' && b[i] != '{' {
		j := i
		for j < len(b) && b[j] != ',' && b[j] != '}' && b[j] != ']' && b[j] != ' ' {
			j++
		}
		return j
	}
	depth := 0
	for j := i; j < len(b); j++ {
		switch b[j] {
		case '"':
			_, e, ok := scanString(b, j)
			if !ok {
				return -1
			}
			j = e
		case '[', '{':
			depth++
		case ']', '}':
			depth--
			if depth == 0 {
				return j + 1
			}
		}
	}
	return -1
}

// parseInt parses a non-negative decimal integer; JSON numbers the server
// sends for seq and count are plain integers.
func parseInt(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 19 || (len(b) == 19 && b[0] > '8') { // 19 digits: UnixNano; no overflow
		return 0, false
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// Message text layout: "<send UnixNano> <sender id> <per-sender n> xxx…",
// padded with 'x' to the requested size. Only digits, spaces and 'x', so it
// never needs JSON escaping and the receiver can read it from the raw frame.

// appendText appends a message text of at least size bytes.
func appendText(buf []byte, sendNano int64, sender, n int, size int) []byte {
	start := len(buf)
	buf = strconv.AppendInt(buf, sendNano, 10)
	buf = append(buf, ' ')
	buf = strconv.AppendInt(buf, int64(sender), 10)
	buf = append(buf, ' ')
	buf = strconv.AppendInt(buf, int64(n), 10)
	buf = append(buf, ' ')
	for len(buf)-start < size {
		buf = append(buf, 'x')
	}
	return buf
}

// parseText reads the three numbers back from a message text.
func parseText(t []byte) (sendNano int64, sender, n int64, ok bool) {
	var nums [3]int64
	i := 0
	for k := 0; k < 3; k++ {
		j := i
		for j < len(t) && t[j] != ' ' {
			j++
		}
		v, good := parseInt(t[i:j])
		if !good {
			return 0, 0, 0, false
		}
		nums[k] = v
		i = j + 1
	}
	return nums[0], nums[1], nums[2], true
}

// roomIndex extracts the number after the last 'r' of a generated room
// name ("lt1a2b-r17" -> 17); -1 if the name is not one of ours.
func roomIndex(name []byte) int64 {
	for j := len(name) - 1; j >= 0; j-- {
		if name[j] == 'r' {
			v, ok := parseInt(name[j+1:])
			if !ok {
				return -1
			}
			return v
		}
	}
	return -1
}
