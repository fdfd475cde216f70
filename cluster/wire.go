package cluster

import (
	"encoding/binary"
	"errors"

	"nbchat/room"
)

// The wire format is a flat binary encoding of room.Envelope: it is only
// ever read by another nbchat node of the same version.

var errShort = errors.New("cluster: truncated message")

// wireVersion is the first byte of every message, so a node of another
// version is noticed instead of misread.
const wireVersion = 2

func appendEnvelope(b []byte, e *room.Envelope) []byte {
	b = append(b, wireVersion, byte(e.Op), e.Hops)
	b = appendString(b, e.Node)
	b = appendString(b, e.Room)
	b = appendString(b, e.Name)
	b = appendString(b, e.To)
	b = appendBytes(b, e.Ref)
	b = appendBytes(b, e.ID)
	b = appendBytes(b, e.Text)
	b = appendBytes(b, e.After)
	b = binary.AppendUvarint(b, e.Seq)
	b = binary.AppendVarint(b, e.TS)
	b = binary.AppendVarint(b, e.Since)
	b = binary.AppendVarint(b, e.Before)
	b = binary.AppendVarint(b, int64(e.Limit))
	b = binary.AppendUvarint(b, uint64(len(e.Frames)))
	for _, f := range e.Frames {
		b = appendBytes(b, f)
	}
	return binary.AppendUvarint(b, e.Conn)
}

// decodeEnvelope fills e from b; byte fields alias b.
func decodeEnvelope(b []byte, e *room.Envelope) error {
	d := decoder{b: b}
	if d.byte() != wireVersion {
		return errors.New("cluster: message from another version of nbchat")
	}
	e.Op = room.Op(d.byte())
	e.Hops = d.byte()
	e.Node = d.string()
	e.Room = d.string()
	e.Name = d.string()
	e.To = d.string()
	e.Ref = d.bytes()
	e.ID = d.bytes()
	e.Text = d.bytes()
	e.After = d.bytes()
	e.Seq = d.uvarint()
	e.TS = d.varint()
	e.Since = d.varint()
	e.Before = d.varint()
	e.Limit = int(d.varint())
	n := d.uvarint()
	if n > uint64(len(b)) {
		return errShort
	}
	e.Frames = nil
	if n > 0 {
		e.Frames = make([][]byte, n)
		for i := range e.Frames {
			e.Frames[i] = d.bytes()
		}
	}
	e.Conn = d.uvarint()
	return d.err
}

func appendClaimReply(b []byte, r *room.ClaimReply) []byte {
	b = append(b, wireVersion)
	b = binary.AppendUvarint(b, r.Seq)
	b = binary.AppendUvarint(b, uint64(len(r.Names)))
	for _, n := range r.Names {
		b = appendString(b, n)
	}
	b = binary.AppendUvarint(b, uint64(len(r.Hist)))
	for _, h := range r.Hist {
		b = binary.AppendUvarint(b, h.Seq)
		b = binary.AppendVarint(b, h.TS)
		b = appendBytes(b, h.Payload)
	}
	return b
}

func decodeClaimReply(b []byte) (room.ClaimReply, error) {
	d := decoder{b: b}
	var r room.ClaimReply
	if d.byte() != wireVersion {
		return r, errors.New("cluster: claim reply from another version of nbchat")
	}
	r.Seq = d.uvarint()
	n := d.uvarint()
	if n > uint64(len(b)) {
		return r, errShort
	}
	for range n {
		r.Names = append(r.Names, d.string())
	}
	n = d.uvarint()
	if n > uint64(len(b)) {
		return r, errShort
	}
	for range n {
		r.Hist = append(r.Hist, room.HistEntry{Seq: d.uvarint(), TS: d.varint(), Payload: d.bytes()})
	}
	return r, d.err
}

// Byte fields are written as length+1, so nil (0) and empty (1) differ:
// a message id that is absent is not an empty id.
func appendBytes(b, v []byte) []byte {
	if v == nil {
		return append(b, 0)
	}
	b = binary.AppendUvarint(b, uint64(len(v))+1)
	return append(b, v...)
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail() {
	if d.err == nil {
		d.err = errShort
	}
	d.b = nil
}

func (d *decoder) byte() byte {
	if len(d.b) == 0 {
		d.fail()
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) take(n uint64) []byte {
	if n > uint64(len(d.b)) {
		d.fail()
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if n == 0 {
		return nil
	}
	return d.take(n - 1)
}

func (d *decoder) string() string { return string(d.take(d.uvarint())) }
