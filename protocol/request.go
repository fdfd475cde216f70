package protocol

import (
	"unicode/utf8"
)

// Type is a request's type.
type Type uint8

// Request types.
const (
	TypeUnknown Type = iota
	TypeJoin
	TypeLeave
	TypeMsg
	TypeDM
	TypeMembers
	TypeRooms
	TypePing
	TypeHistory
	TypeTyping
)

var typeNames = [...]string{
	TypeJoin:    "join",
	TypeLeave:   "leave",
	TypeMsg:     "msg",
	TypeDM:      "dm",
	TypeMembers: "members",
	TypeRooms:   "rooms",
	TypePing:    "ping",
	TypeHistory: "history",
	TypeTyping:  "typing",
}

// String returns the type as it appears on the wire.
func (t Type) String() string {
	if int(t) < len(typeNames) && typeNames[t] != "" {
		return typeNames[t]
	}
	return "unknown"
}

// Request is a decoded client request. Its byte slices point into the buffer
// given to Decode and are valid only as long as that buffer is.
type Request struct {
	Type Type
	// ID is the raw JSON of the request's id (a string with its quotes, or a
	// number), or nil; replies carry it back verbatim as "ref".
	ID    []byte
	Room  []byte
	Text  []byte
	To    []byte
	After []byte
	// Limit is the page size of a members or history request; when the
	// request names none it is DefaultHistoryPage for history and
	// DefaultMembersPage otherwise.
	Limit int
	// Since is the last seq a rejoining client saw (join), Before the seq a
	// history page ends before; -1 when absent.
	Since, Before int64

	idBuf [maxIDLen*6 + 2]byte
}

// maxIDLen bounds a request id, in bytes, so refs stay small.
const maxIDLen = 64

// field bits, to reject a known field given twice.
const (
	fType = 1 << iota
	fID
	fRoom
	fText
	fTo
	fAfter
	fLimit
	fSince
	fBefore
)

// Decode parses data, a client's text message, into r. It unescapes strings
// in place, so data is modified and must stay alive while r is used. maxText
// limits Text in bytes. A nil result means r is a valid request.
func (r *Request) Decode(data []byte, maxText int) *Error {
	r.Type, r.ID, r.Room, r.Text, r.To, r.After = TypeUnknown, nil, nil, nil, nil, nil
	r.Limit, r.Since, r.Before = -1, -1, -1
	s := scanner{b: data}
	if err := r.scan(&s); err != nil {
		return err
	}
	return r.validate(maxText)
}

func (r *Request) scan(s *scanner) *Error {
	s.space()
	if !s.eat('{') {
		return errNotObject
	}
	var seen int
	s.space()
	if s.eat('}') {
		return errNoType
	}
	for {
		s.space()
		key, ok := s.str()
		if !ok {
			return errBadJSON
		}
		s.space()
		if !s.eat(':') {
			return errBadJSON
		}
		s.space()
		bit, err := r.value(s, key)
		if err != nil {
			return err
		}
		if bit != 0 {
			if seen&bit != 0 {
				return errDupField
			}
			seen |= bit
		}
		s.space()
		if s.eat(',') {
			continue
		}
		if !s.eat('}') {
			return errBadJSON
		}
		s.space()
		if s.i != len(s.b) {
			return errBadJSON
		}
		if seen&fType == 0 {
			return errNoType
		}
		return nil
	}
}

// value scans the value of key into r and returns the key's field bit (0 for
// an unknown key, whose value is skipped so clients may add fields).
func (r *Request) value(s *scanner, key []byte) (int, *Error) {
	var dst *[]byte
	var bit int
	switch string(key) {
	case "type":
		v, ok := s.str()
		if !ok {
			return 0, errBadType
		}
		r.Type = lookupType(v)
		if r.Type == TypeUnknown {
			return 0, errUnknownType
		}
		return fType, nil
	case "id":
		start := s.i
		switch {
		case s.peek() == '"':
			v, ok := s.str()
			if !ok {
				return 0, errBadJSON
			}
			if len(v) > maxIDLen {
				return 0, errBadID
			}
			// Unescaping happened in place, so the source is re-quoted.
			r.ID = AppendString(r.idBuf[:0], v)
		case s.number():
			if s.i-start > maxIDLen {
				return 0, errBadID
			}
			r.ID = data(s, start)
		default:
			return 0, errBadID
		}
		return fID, nil
	case "limit":
		n, ok := s.uint(9)
		if !ok {
			return 0, errBadLimit
		}
		r.Limit = int(n)
		return fLimit, nil
	case "since":
		n, ok := s.uint(18)
		if !ok {
			return 0, errBadSince
		}
		r.Since = n
		return fSince, nil
	case "before":
		n, ok := s.uint(18)
		if !ok || n == 0 {
			return 0, errBadBefore
		}
		r.Before = n
		return fBefore, nil
	case "room":
		dst, bit = &r.Room, fRoom
	case "text":
		dst, bit = &r.Text, fText
	case "to":
		dst, bit = &r.To, fTo
	case "after":
		dst, bit = &r.After, fAfter
	default:
		if !s.skip(0) {
			return 0, errBadJSON
		}
		return 0, nil
	}
	if s.peek() != '"' {
		if !s.skip(0) {
			return 0, errBadJSON
		}
		return 0, errWrongType[bit]
	}
	v, ok := s.str()
	if !ok {
		return 0, errBadJSON
	}
	*dst = v
	return bit, nil
}

func data(s *scanner, start int) []byte { return s.b[start:s.i:s.i] }

var errWrongType = map[int]*Error{
	fRoom:  {CodeBadRequest, "room must be a string"},
	fText:  {CodeBadRequest, "text must be a string"},
	fTo:    {CodeBadRequest, "to must be a string"},
	fAfter: {CodeBadRequest, "after must be a string"},
}

func (r *Request) validate(maxText int) *Error {
	if r.Limit == -1 && r.Type != TypeHistory {
		r.Limit = DefaultMembersPage
	}
	switch r.Type {
	case TypeJoin, TypeLeave:
		return checkRoom(r.Room)
	case TypeHistory:
		if err := checkRoom(r.Room); err != nil {
			return err
		}
		if r.Limit == -1 {
			r.Limit = DefaultHistoryPage
		}
		if r.Limit < 1 || r.Limit > MaxHistoryPage {
			return errBadHistoryLimit
		}
		return nil
	case TypeMsg:
		if err := checkRoom(r.Room); err != nil {
			return err
		}
		return checkText(r.Text, maxText)
	case TypeDM:
		if r.To == nil {
			return errNoTo
		}
		if !ValidName(r.To) {
			return errBadTo
		}
		return checkText(r.Text, maxText)
	case TypeTyping:
		switch {
		case r.Room != nil && r.To != nil:
			return errTypingBoth
		case r.Room != nil:
			return checkRoom(r.Room)
		case r.To == nil:
			return errTypingWhere
		case !ValidName(r.To):
			return errBadTo
		}
	case TypeMembers:
		if err := checkRoom(r.Room); err != nil {
			return err
		}
		if r.After != nil && len(r.After) > MaxNameLen {
			return errBadAfter
		}
		if r.Limit == -1 {
			r.Limit = DefaultMembersPage
		}
		if r.Limit < 1 || r.Limit > MaxMembersPage {
			return errBadLimit
		}
	}
	return nil
}

func checkRoom(room []byte) *Error {
	if room == nil {
		return errNoRoom
	}
	if !ValidName(room) {
		return errBadRoom
	}
	return nil
}

func checkText(text []byte, maxText int) *Error {
	if text == nil {
		return errNoText
	}
	if len(text) == 0 {
		return errEmptyText
	}
	if maxText > 0 && len(text) > maxText {
		return errTooLarge
	}
	return nil
}

func lookupType(v []byte) Type {
	for t, name := range typeNames {
		if name != "" && string(v) == name {
			return Type(t)
		}
	}
	return TypeUnknown
}

// scanner reads JSON from b. It is only as general as requests need: one
// flat object, whose unknown values it skips.
type scanner struct {
	b []byte
	i int
}

func (s *scanner) peek() byte {
	if s.i < len(s.b) {
		return s.b[s.i]
	}
	return 0
}

func (s *scanner) eat(c byte) bool {
	if s.i < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

func (s *scanner) space() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// str scans a JSON string and returns its unescaped contents, written in
// place over the source bytes.
func (s *scanner) str() ([]byte, bool) {
	if !s.eat('"') {
		return nil, false
	}
	start := s.i
	w := s.i
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			s.i++
			return s.b[start:w:w], true
		case c < 0x20:
			return nil, false
		case c != '\\':
			s.b[w] = c
			w++
			s.i++
			continue
		}
		// An escape: its decoded form is never longer than its source.
		if s.i+1 >= len(s.b) {
			return nil, false
		}
		e := s.b[s.i+1]
		s.i += 2
		var r rune
		switch e {
		case '"', '\\', '/':
			r = rune(e)
		case 'b':
			r = '\b'
		case 'f':
			r = '\f'
		case 'n':
			r = '\n'
		case 'r':
			r = '\r'
		case 't':
			r = '\t'
		case 'u':
			var ok bool
			if r, ok = s.hex4(); !ok {
				return nil, false
			}
			if r >= 0xD800 && r < 0xDC00 {
				// A high surrogate must be followed by an escaped low one.
				if s.i+1 < len(s.b) && s.b[s.i] == '\\' && s.b[s.i+1] == 'u' {
					s.i += 2
					lo, ok := s.hex4()
					if !ok || lo < 0xDC00 || lo >= 0xE000 {
						return nil, false
					}
					r = 0x10000 + (r-0xD800)<<10 + (lo - 0xDC00)
				} else {
					return nil, false
				}
			} else if r >= 0xDC00 && r < 0xE000 {
				return nil, false
			}
		default:
			return nil, false
		}
		w += utf8.EncodeRune(s.b[w:], r)
	}
	return nil, false
}

func (s *scanner) hex4() (rune, bool) {
	if s.i+4 > len(s.b) {
		return 0, false
	}
	var r rune
	for _, c := range s.b[s.i : s.i+4] {
		r <<= 4
		switch {
		case c >= '0' && c <= '9':
			r |= rune(c - '0')
		case c >= 'a' && c <= 'f':
			r |= rune(c - 'a' + 10)
		case c >= 'A' && c <= 'F':
			r |= rune(c - 'A' + 10)
		default:
			return 0, false
		}
	}
	s.i += 4
	return r, true
}

// number scans a JSON number.
func (s *scanner) number() bool {
	start := s.i
	s.eat('-')
	switch {
	case s.eat('0'):
	case s.digits() == 0:
		s.i = start
		return false
	}
	if s.eat('.') && s.digits() == 0 {
		return false
	}
	if s.eat('e') || s.eat('E') {
		if !s.eat('+') {
			s.eat('-')
		}
		if s.digits() == 0 {
			return false
		}
	}
	return true
}

func (s *scanner) digits() int {
	n := 0
	for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
		s.i++
		n++
	}
	return n
}

// uint scans a non-negative JSON integer of at most maxDigits digits.
func (s *scanner) uint(maxDigits int) (int64, bool) {
	start := s.i
	if !s.number() {
		return 0, false
	}
	v := s.b[start:s.i]
	if len(v) == 0 || len(v) > maxDigits || (len(v) > 1 && v[0] == '0') {
		return 0, false
	}
	var n int64
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// skip scans any JSON value; depth bounds nesting so hostile input cannot
// recurse deeply.
func (s *scanner) skip(depth int) bool {
	if depth > 32 {
		return false
	}
	switch c := s.peek(); {
	case c == '"':
		_, ok := s.str()
		return ok
	case c == '{' || c == '[':
		end := byte('}')
		if c == '[' {
			end = ']'
		}
		s.i++
		s.space()
		if s.eat(end) {
			return true
		}
		for {
			s.space()
			if c == '{' {
				if _, ok := s.str(); !ok {
					return false
				}
				s.space()
				if !s.eat(':') {
					return false
				}
				s.space()
			}
			if !s.skip(depth + 1) {
				return false
			}
			s.space()
			if s.eat(end) {
				return true
			}
			if !s.eat(',') {
				return false
			}
		}
	case c == 't':
		return s.lit("true")
	case c == 'f':
		return s.lit("false")
	case c == 'n':
		return s.lit("null")
	default:
		return s.number()
	}
}

func (s *scanner) lit(w string) bool {
	if len(s.b)-s.i >= len(w) && string(s.b[s.i:s.i+len(w)]) == w {
		s.i += len(w)
		return true
	}
	return false
}
