package protocol_test

import (
	"bytes"
	"encoding/json"
	"strconv"
	"testing"
	"unicode/utf8"

	"nbchat/protocol"
)

var requestSeeds = []string{
	`{"type":"join","room":"lobby"}`,
	`{"type":"leave","room":"lobby","id":1}`,
	`{"type":"msg","room":"lobby","text":"hi","id":"m1"}`,
	`{"type":"msg","room":"lobby","text":"\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00 é😀"}`,
	`{"type":"dm","to":"bob","text":"hi"}`,
	`{"type":"members","room":"lobby","after":"bob","limit":100}`,
	`{"type":"members","room":"lobby","limit":1000,"id":-1.5e3}`,
	`{"type":"rooms"}`,
	`{"type":"typing","room":"lobby"}`,
	`{"type":"typing","to":"bob","id":2}`,
	`{"type":"ping","id":"p"}`,
	` { "id" : "x" , "type" : "ping" , "extra" : [ {"a":null} , true , 1e9 ] } `,
	// Broken ones.
	``,
	`[]`,
	`{}`,
	`{"type":"ping"`,
	`{"type":"ping"}x`,
	`{"type":"shout"}`,
	`{"type":1}`,
	`{"type":"ping","type":"ping"}`,
	`{"type":"join","room":"a b"}`,
	`{"type":"msg","room":"a","text":""}`,
	`{"type":"msg","room":"a","text":"\ud83d"}`,
	`{"type":"members","room":"a","limit":0}`,
	`{"type":"members","room":"a","limit":1.0}`,
	`{"type":"ping","id":"` + string(bytes.Repeat([]byte(`\"`), 65)) + `"}`,
	`{"type":"ping","x":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}`,
	"{\"type\":\"msg\",\"room\":\"a\",\"text\":\"a\x00b\"}",
	"{\"type\":\"msg\",\"room\":\"a\",\"text\":\"\xff\xfe\"}",
}

// fuzzMaxTexts are the text limits each fuzz input is decoded with: the
// default and one small enough for fuzzed texts to reach.
var fuzzMaxTexts = []int{protocol.DefaultMaxText, 8}

// FuzzDecodeRequest checks Decode against encoding/json:
//
//   - Decode never panics.
//   - If Decode accepts, the input is JSON (json.Valid), and a request
//     re-encoded from the decoded fields with AppendString decodes to the
//     same fields.
//   - If the input is UTF-8 and JSON (json.Valid), refDecode, a plain
//     encoding/json reading of the wire format, accepts exactly when Decode
//     does, and then both give the same fields. The one input left out is
//     one nested more than Decode's skip depth, a limit encoding/json does
//     not have.
func FuzzDecodeRequest(f *testing.F) {
	for _, s := range requestSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		for _, maxText := range fuzzMaxTexts {
			checkDecode(t, in, maxText)
		}
	})
}

func checkDecode(t *testing.T, in []byte, maxText int) {
	var r protocol.Request
	err := r.Decode(bytes.Clone(in), maxText)
	if err != nil && err.Code == "" {
		t.Fatalf("Decode(%q) = error without a code", in)
	}
	valid := json.Valid(in)
	if err == nil {
		if !valid {
			t.Fatalf("Decode accepted %q, which is not JSON", in)
		}
		got := fieldsOf(&r)
		again := reencode(&r)
		var r2 protocol.Request
		if err := r2.Decode(bytes.Clone(again), maxText); err != nil {
			t.Fatalf("re-encoded %q as %q, which Decode refuses: %v", in, again, err)
		}
		if got2 := fieldsOf(&r2); got2 != got {
			t.Fatalf("re-encoded %q as %q:\n got %+v\nwant %+v", in, again, got2, got)
		}
	}
	if !valid || !utf8.Valid(in) || jsonDepth(in) > maxSkipDepth {
		return
	}
	want, ok := refDecode(in, maxText)
	switch {
	case ok && err != nil:
		t.Fatalf("Decode(%q) = %v; encoding/json reads a valid request %+v", in, err, want)
	case !ok && err == nil:
		t.Fatalf("Decode(%q) accepted %+v; encoding/json reads no valid request", in, fieldsOf(&r))
	case ok && fieldsOf(&r) != want:
		t.Fatalf("Decode(%q)\n got %+v\nwant %+v (encoding/json)", in, fieldsOf(&r), want)
	}
}

// reencode writes r's fields back as a request.
func reencode(r *protocol.Request) []byte {
	b := []byte(`{"type":`)
	b = protocol.AppendString(b, r.Type.String())
	for _, kv := range []struct {
		key string
		v   []byte
	}{{"room", r.Room}, {"text", r.Text}, {"to", r.To}, {"after", r.After}} {
		if kv.v != nil {
			b = protocol.AppendString(append(b, `,"`+kv.key+`":`...), kv.v)
		}
	}
	if r.ID != nil {
		b = append(append(b, `,"id":`...), r.ID...)
	}
	b = strconv.AppendInt(append(b, `,"limit":`...), int64(r.Limit), 10)
	return append(b, '}')
}

// maxSkipDepth is the deepest nesting Decode reads: the request object and
// 33 levels of arrays or objects inside an unknown field.
const maxSkipDepth = 34

// jsonDepth returns the deepest nesting of arrays and objects in in, which
// must be valid JSON.
func jsonDepth(in []byte) int {
	depth, max := 0, 0
	inStr := false
	for i := 0; i < len(in); i++ {
		c := in[i]
		switch {
		case inStr && c == '\\':
			i++
		case c == '"':
			inStr = !inStr
		case inStr:
		case c == '{' || c == '[':
			depth++
			max = maxInt(max, depth)
		case c == '}' || c == ']':
			depth--
		}
	}
	return max
}

func maxInt(a, b int) int {
	if a > b {
		return a
	}
	return b
}

// hasLoneSurrogate reports whether in, valid JSON, has a \u escape of a
// UTF-16 surrogate that is not part of a high-low pair. encoding/json turns
// those into U+FFFD; the wire format refuses them.
func hasLoneSurrogate(in []byte) bool {
	hex := func(i int) rune {
		if i+6 > len(in) || in[i] != '\\' || in[i+1] != 'u' {
			return -1
		}
		v, err := strconv.ParseUint(string(in[i+2:i+6]), 16, 16)
		if err != nil {
			return -1
		}
		return rune(v)
	}
	for i := 0; i < len(in); i++ {
		if in[i] != '\\' {
			continue
		}
		r := hex(i)
		switch {
		case r >= 0xD800 && r < 0xDC00:
			if lo := hex(i + 6); lo < 0xDC00 || lo >= 0xE000 {
				return true
			}
			i += 11
		case r >= 0xDC00 && r < 0xE000:
			return true
		default:
			i++ // skip the escaped byte, so `\\u` is not read as an escape
		}
	}
	return false
}

// refDecode reads in, valid UTF-8 JSON, as the wire format describes
// requests, using encoding/json for all JSON parsing. It returns the fields
// a valid request must decode to, or false if the request must be refused.
//
// It is stricter than encoding/json where the wire format is: keys match
// exactly (encoding/json's struct decoding ignores case), a known field
// given twice is refused (encoding/json keeps the last), and lone surrogate
// escapes are refused (encoding/json replaces them with U+FFFD).
func refDecode(in []byte, maxText int) (fields, bool) {
	f := fields{Limit: protocol.DefaultMembersPage}
	if hasLoneSurrogate(in) {
		return f, false
	}
	dec := json.NewDecoder(bytes.NewReader(in))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return f, false
	}
	seen := map[string]bool{}
	var room, text, to, after *string
	str := func(raw json.RawMessage) (*string, bool) {
		if raw[0] != '"' {
			return nil, false
		}
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return nil, false
		}
		return &s, true
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return f, false
		}
		key := tok.(string)
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return f, false
		}
		raw = bytes.TrimSpace(raw)
		switch key {
		case "type", "id", "limit", "room", "text", "to", "after", "since", "before":
			if seen[key] {
				return f, false
			}
			seen[key] = true
		}
		var ok bool
		switch key {
		case "type":
			s, ok := str(raw)
			if !ok {
				return f, false
			}
			for t := protocol.TypeJoin; t <= protocol.TypeTyping; t++ {
				if t.String() == *s {
					f.Type = t
				}
			}
			if f.Type == protocol.TypeUnknown {
				return f, false
			}
		case "id":
			if raw[0] == '"' {
				s, _ := str(raw)
				if len(*s) > 64 {
					return f, false
				}
				f.ID = string(protocol.AppendString(nil, *s))
			} else if raw[0] == '-' || raw[0] >= '0' && raw[0] <= '9' {
				if len(raw) > 64 {
					return f, false
				}
				f.ID = string(raw)
			} else {
				return f, false
			}
		case "limit":
			if len(raw) > 9 || len(raw) > 1 && raw[0] == '0' {
				return f, false
			}
			if f.Limit, err = strconv.Atoi(string(raw)); err != nil || f.Limit < 0 {
				return f, false
			}
			if raw[0] == '+' || raw[0] == '-' {
				return f, false
			}
		case "since", "before":
			if len(raw) > 18 || len(raw) > 1 && raw[0] == '0' || raw[0] < '0' || raw[0] > '9' {
				return f, false
			}
			n, err := strconv.ParseInt(string(raw), 10, 64)
			if err != nil || key == "before" && n == 0 {
				return f, false
			}
			if key == "since" {
				f.Since = strconv.FormatInt(n, 10)
			} else {
				f.Before = strconv.FormatInt(n, 10)
			}
		case "room":
			if room, ok = str(raw); !ok {
				return f, false
			}
		case "text":
			if text, ok = str(raw); !ok {
				return f, false
			}
		case "to":
			if to, ok = str(raw); !ok {
				return f, false
			}
		case "after":
			if after, ok = str(raw); !ok {
				return f, false
			}
		}
	}
	if f.Type == protocol.TypeUnknown {
		return f, false
	}
	for _, p := range []struct {
		dst *string
		src *string
	}{{&f.Room, room}, {&f.Text, text}, {&f.To, to}, {&f.After, after}} {
		if p.src != nil {
			*p.dst = *p.src
		}
	}
	okText := text != nil && *text != "" && (maxText <= 0 || len(*text) <= maxText)
	switch f.Type {
	case protocol.TypeJoin, protocol.TypeLeave:
		return f, room != nil && protocol.ValidName(*room)
	case protocol.TypeMsg:
		return f, room != nil && protocol.ValidName(*room) && okText
	case protocol.TypeDM:
		return f, to != nil && protocol.ValidName(*to) && okText
	case protocol.TypeMembers:
		return f, room != nil && protocol.ValidName(*room) &&
			(after == nil || len(*after) <= protocol.MaxNameLen) &&
			f.Limit >= 1 && f.Limit <= protocol.MaxMembersPage
	case protocol.TypeHistory:
		if !seen["limit"] {
			f.Limit = protocol.DefaultHistoryPage
		}
		return f, room != nil && protocol.ValidName(*room) &&
			f.Limit >= 1 && f.Limit <= protocol.MaxHistoryPage
	case protocol.TypeTyping:
		if room != nil {
			return f, to == nil && protocol.ValidName(*room)
		}
		return f, to != nil && protocol.ValidName(*to)
	}
	return f, true
}

// FuzzAppendString checks that encoding/json reads back any UTF-8 string
// AppendString writes, and so does Decode.
func FuzzAppendString(f *testing.F) {
	for _, tt := range appendStringTests {
		f.Add(tt.in)
	}
	f.Add("\xff")
	f.Fuzz(func(t *testing.T, s string) {
		out := protocol.AppendString(nil, s)
		if !bytes.Equal(protocol.AppendString(nil, []byte(s)), out) {
			t.Fatalf("string and []byte forms of %q differ", s)
		}
		if !json.Valid(out) {
			t.Fatalf("AppendString(%q) = %s, not JSON", s, out)
		}
		if !utf8.ValidString(s) {
			return // AppendString's contract: the input is UTF-8
		}
		var back string
		if err := json.Unmarshal(out, &back); err != nil || back != s {
			t.Fatalf("AppendString(%q) = %s, which reads back as %q, %v", s, out, back, err)
		}
		if s == "" {
			return
		}
		var r protocol.Request
		in := append(append([]byte(`{"type":"msg","room":"a","text":`), out...), '}')
		if err := r.Decode(in, 0); err != nil || string(r.Text) != s {
			t.Fatalf("Decode(%s) = %q, %v; want %q", in, r.Text, err, s)
		}
	})
}
