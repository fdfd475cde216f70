package protocol

import (
	"iter"
	"strconv"
	"unicode/utf8"
)

// Welcome is the first message on every connection; dmSeq is the seq of
// the latest direct message kept for the user.
func Welcome(name string, dmSeq uint64) *Frame {
	f := newFrame()
	b := append(f.buf, `{"type":"welcome","name":`...)
	b = AppendString(b, name)
	b = append(b, `,"version":`...)
	b = strconv.AppendInt(b, Version, 10)
	b = append(b, `,"dm_seq":`...)
	b = strconv.AppendUint(b, dmSeq, 10)
	return f.finish(append(b, '}'), OpText)
}

// Recovery says whether a join with since got every message after since.
type Recovery int8

// Recovery outcomes.
const (
	RecoveryNone    Recovery = iota // the join did not ask to recover
	RecoveryPartial                 // some messages after since are no longer kept
	RecoveryFull                    // every message after since follows
)

// Joined answers a join: the room's member count, the first members in name
// order and the room's latest seq; with a recovery outcome, "recovered".
func Joined(ref []byte, room string, count int, members iter.Seq[string], seq uint64, rec Recovery) *Frame {
	f := newFrame()
	b := append(f.buf, `{"type":"joined","room":`...)
	b = AppendString(b, room)
	b = appendCount(b, count)
	b = appendNames(append(b, `,"members":`...), members)
	b = append(b, `,"seq":`...)
	b = strconv.AppendUint(b, seq, 10)
	switch rec {
	case RecoveryFull:
		b = append(b, `,"recovered":true`...)
	case RecoveryPartial:
		b = append(b, `,"recovered":false`...)
	}
	return f.finish(appendRef(b, ref), OpText)
}

// Ack confirms that the message with id ref is stored as seq in room.
func Ack(ref []byte, room string, seq uint64) *Frame {
	f := newFrame()
	b := append(f.buf, `{"type":"ack","room":`...)
	b = AppendString(b, room)
	b = append(b, `,"seq":`...)
	b = strconv.AppendUint(b, seq, 10)
	return f.finish(appendRef(b, ref), OpText)
}

// AckDM answers a direct message to the user called to that was sent again
// with an id the server already has: it was delivered once, and is not
// again.
func AckDM(ref []byte, to string) *Frame {
	f := newFrame()
	b := append(f.buf, `{"type":"ack","to":`...)
	b = AppendString(b, to)
	return f.finish(appendRef(b, ref), OpText)
}

// History answers a history request with stored messages, oldest first.
// Each payload is a stored msg message, copied as it is; more says whether
// older messages are kept.
func History(ref []byte, room string, payloads iter.Seq[[]byte], more bool) *Frame {
	f := newFrame()
	b := append(f.buf, `{"type":"history","room":`...)
	b = AppendString(b, room)
	b = append(b, `,"messages":[`...)
	first := true
	for p := range payloads {
		if !first {
			b = append(b, ',')
		}
		first = false
		b = append(b, p...)
	}
	b = append(b, `],"more":`...)
	b = strconv.AppendBool(b, more)
	return f.finish(appendRef(b, ref), OpText)
}

// Left answers a leave.
func Left(ref []byte, room string) *Frame {
	f := newFrame()
	b := append(f.buf, `{"type":"left","room":`...)
	b = AppendString(b, room)
	return f.finish(appendRef(b, ref), OpText)
}

// Msg is a room message as every member receives it.
func Msg(room, from string, text []byte, seq uint64, ts int64) *Frame {
	f := newFrame()
	b := append(f.buf, `{"type":"msg","room":`...)
	b = AppendString(b, room)
	b = append(b, `,"from":`...)
	b = AppendString(b, from)
	b = append(b, `,"text":`...)
	b = AppendString(b, text)
	b = append(b, `,"seq":`...)
	b = strconv.AppendUint(b, seq, 10)
	b = append(b, `,"ts":`...)
	b = strconv.AppendInt(b, ts, 10)
	return f.finish(append(b, '}'), OpText)
}

// DM is a direct message as one of its two parties receives it; seq numbers
// it in that party's own sequence of direct messages.
func DM(from, to string, text []byte, ts int64, seq uint64) *Frame {
	f := newFrame()
	b := append(f.buf, `{"type":"dm","from":`...)
	b = AppendString(b, from)
	b = append(b, `,"to":`...)
	b = AppendString(b, to)
	b = append(b, `,"text":`...)
	b = AppendString(b, text)
	b = append(b, `,"ts":`...)
	b = strconv.AppendInt(b, ts, 10)
	b = append(b, `,"seq":`...)
	b = strconv.AppendUint(b, seq, 10)
	return f.finish(append(b, '}'), OpText)
}

// Typing tells a room's members that from is typing there, or, with room
// "", the user to that from is typing to them. Nothing is kept or
// numbered: a client shows it for a few seconds unless another comes.
func Typing(room, from, to string) *Frame {
	f := newFrame()
	b := append(f.buf, `{"type":"typing"`...)
	if room != "" {
		b = append(b, `,"room":`...)
		b = AppendString(b, room)
	}
	b = append(b, `,"from":`...)
	b = AppendString(b, from)
	if to != "" {
		b = append(b, `,"to":`...)
		b = AppendString(b, to)
	}
	return f.finish(append(b, '}'), OpText)
}

// Presence events.
const (
	EventJoin  = "join"
	EventLeave = "leave"
)

// PresenceEvent tells a small room's members that name joined or left.
func PresenceEvent(room, event, name string, count int) *Frame {
	f := newFrame()
	b := append(f.buf, `{"type":"presence","room":`...)
	b = AppendString(b, room)
	b = append(b, `,"event":`...)
	b = AppendString(b, event)
	b = append(b, `,"name":`...)
	b = AppendString(b, name)
	b = appendCount(b, count)
	return f.finish(append(b, '}'), OpText)
}

// PresenceBatch tells a room's members, once per interval, who of those
// who came or went since the last is a member now (joined) and who is not
// (left): a big room's lists may be cut short, count is always exact.
func PresenceBatch(room string, joined, left []string, count int) *Frame {
	f := newFrame()
	b := append(f.buf, `{"type":"presence","room":`...)
	b = AppendString(b, room)
	b = appendNames(append(b, `,"joined":`...), slice(joined))
	b = appendNames(append(b, `,"left":`...), slice(left))
	b = appendCount(b, count)
	return f.finish(append(b, '}'), OpText)
}

// Members answers a members request with one page of names.
func Members(ref []byte, room string, count int, members iter.Seq[string]) *Frame {
	f := newFrame()
	b := append(f.buf, `{"type":"members","room":`...)
	b = AppendString(b, room)
	b = appendCount(b, count)
	b = appendNames(append(b, `,"members":`...), members)
	return f.finish(appendRef(b, ref), OpText)
}

// Rooms answers a rooms request with room names and member counts.
func Rooms(ref []byte, rooms iter.Seq2[string, int]) *Frame {
	f := newFrame()
	b := append(f.buf, `{"type":"rooms","rooms":[`...)
	first := true
	for name, count := range rooms {
		if !first {
			b = append(b, ',')
		}
		first = false
		b = append(b, `{"name":`...)
		b = AppendString(b, name)
		b = appendCount(b, count)
		b = append(b, '}')
	}
	b = append(b, ']')
	return f.finish(appendRef(b, ref), OpText)
}

// Pong answers an application-level ping (browsers cannot send WebSocket
// pings, so the page uses this to check its connection).
func Pong(ref []byte) *Frame {
	f := newFrame()
	return f.finish(appendRef(append(f.buf, `{"type":"pong"`...), ref), OpText)
}

// Err reports a refused request.
func Err(ref []byte, e *Error) *Frame {
	f := newFrame()
	b := append(f.buf, `{"type":"error","code":`...)
	b = AppendString(b, string(e.Code))
	b = append(b, `,"message":`...)
	b = AppendString(b, e.Message)
	return f.finish(appendRef(b, ref), OpText)
}

// Close is a WebSocket close frame with code and reason; the reason is cut
// to fit the 125-byte control frame limit.
func Close(code int, reason string) *Frame {
	f := newFrame()
	b := append(f.buf, byte(code>>8), byte(code))
	if len(reason) > 123 {
		reason = reason[:123]
		for len(reason) > 0 && !utf8.ValidString(reason) {
			reason = reason[:len(reason)-1]
		}
	}
	return f.finish(append(b, reason...), OpClose)
}

func appendRef(b, ref []byte) []byte {
	if len(ref) > 0 {
		b = append(b, `,"ref":`...)
		b = append(b, ref...)
	}
	return append(b, '}')
}

func appendCount(b []byte, n int) []byte {
	return strconv.AppendInt(append(b, `,"count":`...), int64(n), 10)
}

func appendNames(b []byte, names iter.Seq[string]) []byte {
	b = append(b, '[')
	first := true
	if names != nil {
		for n := range names {
			if !first {
				b = append(b, ',')
			}
			first = false
			b = AppendString(b, n)
		}
	}
	return append(b, ']')
}

func slice(s []string) iter.Seq[string] {
	return func(yield func(string) bool) {
		for _, v := range s {
			if !yield(v) {
				return
			}
		}
	}
}

const hex = "0123456789abcdef"

// AppendString appends s to b as a JSON string. s must be valid UTF-8 (the
// server only ever holds validated text); it is copied verbatim except for
// the characters JSON requires to be escaped.
func AppendString[T ~string | ~[]byte](b []byte, s T) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		b = append(b, s[start:i]...)
		switch c {
		case '"', '\\':
			b = append(b, '\\', c)
		case '\n':
			b = append(b, '\\', 'n')
		case '\r':
			b = append(b, '\\', 'r')
		case '\t':
			b = append(b, '\\', 't')
		default:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
		}
		start = i + 1
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
