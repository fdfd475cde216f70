package protocol_test

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
	"testing"

	"nbchat/protocol"
)

// fields is a Request's decoded fields as strings; a nil slice reads as "".
type fields struct {
	Type                      protocol.Type
	ID, Room, Text, To, After string
	Limit                     int
	Since, Before             string // "" when absent
}

func fieldsOf(r *protocol.Request) fields {
	return fields{
		Type:   r.Type,
		ID:     string(r.ID),
		Room:   string(r.Room),
		Text:   string(r.Text),
		To:     string(r.To),
		After:  string(r.After),
		Limit:  r.Limit,
		Since:  seqField(r.Since),
		Before: seqField(r.Before),
	}
}

func seqField(n int64) string {
	if n < 0 {
		return ""
	}
	return strconv.FormatInt(n, 10)
}

// decode runs Decode on a copy of in, so table inputs stay intact.
func decode(in string, maxText int) (*protocol.Request, *protocol.Error) {
	var r protocol.Request
	err := r.Decode([]byte(in), maxText)
	return &r, err
}

const page = protocol.DefaultMembersPage

func TestDecodeValid(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want fields
	}{
		{"join", `{"type":"join","room":"lobby"}`, fields{Type: protocol.TypeJoin, Room: "lobby", Limit: page}},
		{"leave", `{"type":"leave","room":"lobby"}`, fields{Type: protocol.TypeLeave, Room: "lobby", Limit: page}},
		{"msg", `{"type":"msg","room":"lobby","text":"hi"}`, fields{Type: protocol.TypeMsg, Room: "lobby", Text: "hi", Limit: page}},
		{"dm", `{"type":"dm","to":"bob","text":"hi"}`, fields{Type: protocol.TypeDM, To: "bob", Text: "hi", Limit: page}},
		{"members", `{"type":"members","room":"lobby","after":"bob","limit":100}`, fields{Type: protocol.TypeMembers, Room: "lobby", After: "bob", Limit: 100}},
		{"members default limit", `{"type":"members","room":"lobby"}`, fields{Type: protocol.TypeMembers, Room: "lobby", Limit: page}},
		{"join since", `{"type":"join","room":"lobby","since":0}`, fields{Type: protocol.TypeJoin, Room: "lobby", Limit: page, Since: "0"}},
		{"history", `{"type":"history","room":"lobby","before":17}`, fields{Type: protocol.TypeHistory, Room: "lobby", Limit: protocol.DefaultHistoryPage, Before: "17"}},
		{"members limit 1", `{"type":"members","room":"r","limit":1}`, fields{Type: protocol.TypeMembers, Room: "r", Limit: 1}},
		{"members limit 1000", `{"type":"members","room":"r","limit":1000}`, fields{Type: protocol.TypeMembers, Room: "r", Limit: 1000}},
		{"rooms", `{"type":"rooms"}`, fields{Type: protocol.TypeRooms, Limit: page}},
		{"typing in a room", `{"type":"typing","room":"lobby"}`, fields{Type: protocol.TypeTyping, Room: "lobby", Limit: page}},
		{"typing to a user", `{"type":"typing","to":"bob"}`, fields{Type: protocol.TypeTyping, To: "bob", Limit: page}},
		{"ping", `{"type":"ping"}`, fields{Type: protocol.TypePing, Limit: page}},
		{"type last", `{"room":"lobby","text":"hi","type":"msg"}`, fields{Type: protocol.TypeMsg, Room: "lobby", Text: "hi", Limit: page}},
		{"whitespace everywhere", " \t\r\n{ \"type\" :\n\"msg\" , \"room\"\t: \"a\" ,\"text\":\"b\"\r\n} \n", fields{Type: protocol.TypeMsg, Room: "a", Text: "b", Limit: page}},
		{"escaped key", `{"t\u0079pe":"ping"}`, fields{Type: protocol.TypePing, Limit: page}},
		{"escaped type value", `{"type":"j\u006fin","room":"a"}`, fields{Type: protocol.TypeJoin, Room: "a", Limit: page}},
		{"escaped room", `{"type":"join","room":"a\u002eb\u005fc"}`, fields{Type: protocol.TypeJoin, Room: "a.b_c", Limit: page}},
		{"room at max length", `{"type":"join","room":"` + strings.Repeat("r", 32) + `"}`, fields{Type: protocol.TypeJoin, Room: strings.Repeat("r", 32), Limit: page}},
		{"limit ignored by join", `{"type":"join","room":"a","limit":0}`, fields{Type: protocol.TypeJoin, Room: "a", Limit: 0}},
		{"room ignored by ping", `{"type":"ping","room":"not a name"}`, fields{Type: protocol.TypePing, Room: "not a name", Limit: page}},
		{"after may be any short string", `{"type":"members","room":"a","after":"no/name"}`, fields{Type: protocol.TypeMembers, Room: "a", After: "no/name", Limit: page}},

		// Unknown fields are skipped whatever their value.
		{"unknown string", `{"type":"ping","x":"y\"}\\"}`, fields{Type: protocol.TypePing, Limit: page}},
		{"unknown number", `{"x":-1.5e+10,"type":"ping"}`, fields{Type: protocol.TypePing, Limit: page}},
		{"unknown literals", `{"a":true,"b":false,"c":null,"type":"ping"}`, fields{Type: protocol.TypePing, Limit: page}},
		{"unknown nested", `{"type":"ping","x":{"a":[1,{"b":[[],{}]},"]}"],"c":{"d":null}}}`, fields{Type: protocol.TypePing, Limit: page}},
		{"unknown empty containers", `{"type":"ping","x":[ ],"y":{ }}`, fields{Type: protocol.TypePing, Limit: page}},
		{"unknown key repeated", `{"type":"ping","x":1,"x":2}`, fields{Type: protocol.TypePing, Limit: page}},
		{"keys are case-sensitive", `{"type":"ping","Type":"join","ROOM":1}`, fields{Type: protocol.TypePing, Limit: page}},
		{"empty key", `{"":1,"type":"ping"}`, fields{Type: protocol.TypePing, Limit: page}},
		{"unknown nested 33 deep", `{"type":"ping","x":` + strings.Repeat("[", 33) + strings.Repeat("]", 33) + `}`, fields{Type: protocol.TypePing, Limit: page}},

		// ids.
		{"id string", `{"type":"ping","id":"a1"}`, fields{Type: protocol.TypePing, ID: `"a1"`, Limit: page}},
		{"id number", `{"type":"ping","id":42}`, fields{Type: protocol.TypePing, ID: `42`, Limit: page}},
		{"id negative float", `{"type":"ping","id":-0.5E-3}`, fields{Type: protocol.TypePing, ID: `-0.5E-3`, Limit: page}},
		{"id empty string", `{"type":"ping","id":""}`, fields{Type: protocol.TypePing, ID: `""`, Limit: page}},
		{"id escapes requoted", `{"type":"ping","id":"a\/b\u00e9\"\\\n"}`, fields{Type: protocol.TypePing, ID: `"a/bé\"\\\n"`, Limit: page}},
		{"id 64 bytes", `{"type":"ping","id":"` + strings.Repeat("i", 64) + `"}`, fields{Type: protocol.TypePing, ID: `"` + strings.Repeat("i", 64) + `"`, Limit: page}},
		{"id 64 bytes unescaped", `{"type":"ping","id":"` + strings.Repeat(`\u0069`, 64) + `"}`, fields{Type: protocol.TypePing, ID: `"` + strings.Repeat("i", 64) + `"`, Limit: page}},
		// Regression: the re-quoted id was limited to 66 bytes, so a string
		// id of at most 64 bytes was refused when it needed escaping.
		{"id 64 bytes needing escapes", `{"type":"ping","id":"` + strings.Repeat(`\"`, 64) + `"}`, fields{Type: protocol.TypePing, ID: `"` + strings.Repeat(`\"`, 64) + `"`, Limit: page}},
		{"id 64 control bytes", `{"type":"ping","id":"` + strings.Repeat(`\u0001`, 64) + `"}`, fields{Type: protocol.TypePing, ID: `"` + strings.Repeat(`\u0001`, 64) + `"`, Limit: page}},
		{"id number 64 digits", `{"type":"ping","id":` + strings.Repeat("9", 64) + `}`, fields{Type: protocol.TypePing, ID: strings.Repeat("9", 64), Limit: page}},
		{"id before error-free fields", `{"id":7,"type":"msg","room":"a","text":"b"}`, fields{Type: protocol.TypeMsg, ID: "7", Room: "a", Text: "b", Limit: page}},

		// Escapes in text.
		{"escape newline", `{"type":"msg","room":"a","text":"x\ny"}`, fields{Type: protocol.TypeMsg, Room: "a", Text: "x\ny", Limit: page}},
		{"escape quote", `{"type":"msg","room":"a","text":"say \"hi\""}`, fields{Type: protocol.TypeMsg, Room: "a", Text: `say "hi"`, Limit: page}},
		{"escape backslash", `{"type":"msg","room":"a","text":"a\\b"}`, fields{Type: protocol.TypeMsg, Room: "a", Text: `a\b`, Limit: page}},
		{"escape solidus", `{"type":"msg","room":"a","text":"a\/b"}`, fields{Type: protocol.TypeMsg, Room: "a", Text: `a/b`, Limit: page}},
		{"escape short forms", `{"type":"msg","room":"a","text":"\b\f\n\r\t"}`, fields{Type: protocol.TypeMsg, Room: "a", Text: "\b\f\n\r\t", Limit: page}},
		{"escape u00e9", `{"type":"msg","room":"a","text":"caf\u00e9"}`, fields{Type: protocol.TypeMsg, Room: "a", Text: "café", Limit: page}},
		{"escape upper hex", `{"type":"msg","room":"a","text":"caf\u00E9"}`, fields{Type: protocol.TypeMsg, Room: "a", Text: "café", Limit: page}},
		{"escape u0000", `{"type":"msg","room":"a","text":"\u0000"}`, fields{Type: protocol.TypeMsg, Room: "a", Text: "\x00", Limit: page}},
		{"escape three bytes", `{"type":"msg","room":"a","text":"\u20ac\u2028"}`, fields{Type: protocol.TypeMsg, Room: "a", Text: "€\u2028", Limit: page}},
		{"escape surrogate pair", `{"type":"msg","room":"a","text":"\ud83d\ude00"}`, fields{Type: protocol.TypeMsg, Room: "a", Text: "😀", Limit: page}},
		{"escape surrogate pair upper", `{"type":"msg","room":"a","text":"<\uD83D\uDE00>"}`, fields{Type: protocol.TypeMsg, Room: "a", Text: "<😀>", Limit: page}},
		{"escape max pair", `{"type":"msg","room":"a","text":"\udbff\udfff"}`, fields{Type: protocol.TypeMsg, Room: "a", Text: "\U0010FFFF", Limit: page}},
		{"raw utf8 kept", `{"type":"msg","room":"a","text":"héllo 😀 世界"}`, fields{Type: protocol.TypeMsg, Room: "a", Text: "héllo 😀 世界", Limit: page}},
		{"raw DEL kept", "{\"type\":\"msg\",\"room\":\"a\",\"text\":\"\x7f\"}", fields{Type: protocol.TypeMsg, Room: "a", Text: "\x7f", Limit: page}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := decode(tt.in, protocol.DefaultMaxText)
			if err != nil {
				t.Fatalf("Decode(%s) = %v", tt.in, err)
			}
			if got := fieldsOf(r); got != tt.want {
				t.Errorf("Decode(%s)\n got %+v\nwant %+v", tt.in, got, tt.want)
			}
		})
	}
}

func TestDecodeInvalid(t *testing.T) {
	long := strings.Repeat("x", protocol.DefaultMaxText)
	tests := []struct {
		name    string
		in      string
		maxText int // DefaultMaxText if 0
		code    protocol.Code
		msg     string // a substring of the error message, if set
	}{
		// Shape.
		{"empty input", ``, 0, protocol.CodeBadRequest, "JSON object"},
		{"only space", ` `, 0, protocol.CodeBadRequest, "JSON object"},
		{"array", `[{"type":"ping"}]`, 0, protocol.CodeBadRequest, "JSON object"},
		{"string", `"ping"`, 0, protocol.CodeBadRequest, "JSON object"},
		{"null", `null`, 0, protocol.CodeBadRequest, "JSON object"},
		{"number", `1`, 0, protocol.CodeBadRequest, "JSON object"},
		{"empty object", `{}`, 0, protocol.CodeBadRequest, "missing type"},
		{"trailing garbage", `{"type":"ping"}x`, 0, protocol.CodeBadRequest, "malformed"},
		{"two objects", `{"type":"ping"}{"type":"ping"}`, 0, protocol.CodeBadRequest, "malformed"},
		{"trailing comma", `{"type":"ping",}`, 0, protocol.CodeBadRequest, "malformed"},
		{"leading comma", `{,"type":"ping"}`, 0, protocol.CodeBadRequest, "malformed"},
		{"missing colon", `{"type" "ping"}`, 0, protocol.CodeBadRequest, "malformed"},
		{"missing comma", `{"type":"join" "room":"a"}`, 0, protocol.CodeBadRequest, "malformed"},
		{"single quotes", `{'type':'ping'}`, 0, protocol.CodeBadRequest, "malformed"},
		{"unquoted key", `{type:"ping"}`, 0, protocol.CodeBadRequest, "malformed"},
		{"truncated after brace", `{`, 0, protocol.CodeBadRequest, "malformed"},
		{"truncated in key", `{"ty`, 0, protocol.CodeBadRequest, "malformed"},
		{"truncated after key", `{"type"`, 0, protocol.CodeBadRequest, "malformed"},
		{"truncated after colon", `{"type":`, 0, protocol.CodeBadRequest, "type must be a string"},
		{"truncated in value", `{"type":"pi`, 0, protocol.CodeBadRequest, "type must be a string"},
		{"truncated after value", `{"type":"ping"`, 0, protocol.CodeBadRequest, "malformed"},
		{"truncated after comma", `{"type":"ping",`, 0, protocol.CodeBadRequest, "malformed"},
		{"truncated unknown", `{"type":"ping","x":[1,`, 0, protocol.CodeBadRequest, "malformed"},
		{"truncated escape", `{"type":"msg","room":"a","text":"\`, 0, protocol.CodeBadRequest, "malformed"},
		{"truncated u escape", `{"type":"msg","room":"a","text":"\u00"}`, 0, protocol.CodeBadRequest, "malformed"},
		{"NUL after object", "{\"type\":\"ping\"}\x00", 0, protocol.CodeBadRequest, "malformed"},
		{"unknown too deep", `{"type":"ping","x":` + strings.Repeat("[", 34) + strings.Repeat("]", 34) + `}`, 0, protocol.CodeBadRequest, "malformed"},
		{"unknown bad literal", `{"type":"ping","x":tru}`, 0, protocol.CodeBadRequest, "malformed"},
		{"unknown bad number", `{"type":"ping","x":01}`, 0, protocol.CodeBadRequest, "malformed"},
		{"unknown number dot", `{"type":"ping","x":1.}`, 0, protocol.CodeBadRequest, "malformed"},
		{"unknown number exp", `{"type":"ping","x":1e}`, 0, protocol.CodeBadRequest, "malformed"},
		{"unknown plus number", `{"type":"ping","x":+1}`, 0, protocol.CodeBadRequest, "malformed"},
		{"unknown object bad key", `{"type":"ping","x":{1:2}}`, 0, protocol.CodeBadRequest, "malformed"},
		{"unknown array trailing comma", `{"type":"ping","x":[1,]}`, 0, protocol.CodeBadRequest, "malformed"},

		// Strings.
		{"invalid escape", `{"type":"msg","room":"a","text":"\x"}`, 0, protocol.CodeBadRequest, "malformed"},
		{"invalid escape in key", `{"t\ype":"ping"}`, 0, protocol.CodeBadRequest, "malformed"},
		{"invalid hex", `{"type":"msg","room":"a","text":"\u00g0"}`, 0, protocol.CodeBadRequest, "malformed"},
		{"lone high surrogate", `{"type":"msg","room":"a","text":"\ud83d"}`, 0, protocol.CodeBadRequest, "malformed"},
		{"high surrogate then char", `{"type":"msg","room":"a","text":"\ud83dx"}`, 0, protocol.CodeBadRequest, "malformed"},
		{"high surrogate then short escape", `{"type":"msg","room":"a","text":"\ud83d\n"}`, 0, protocol.CodeBadRequest, "malformed"},
		{"two high surrogates", `{"type":"msg","room":"a","text":"\ud83d\ud83d"}`, 0, protocol.CodeBadRequest, "malformed"},
		{"high surrogate then BMP", `{"type":"msg","room":"a","text":"\ud83d\u0041"}`, 0, protocol.CodeBadRequest, "malformed"},
		{"lone low surrogate", `{"type":"msg","room":"a","text":"\ude00"}`, 0, protocol.CodeBadRequest, "malformed"},
		{"lone surrogate in unknown", `{"type":"ping","x":"\udfff"}`, 0, protocol.CodeBadRequest, "malformed"},
		{"raw newline", "{\"type\":\"msg\",\"room\":\"a\",\"text\":\"a\nb\"}", 0, protocol.CodeBadRequest, "malformed"},
		{"raw NUL", "{\"type\":\"msg\",\"room\":\"a\",\"text\":\"\x00\"}", 0, protocol.CodeBadRequest, "malformed"},
		{"raw tab", "{\"type\":\"msg\",\"room\":\"a\",\"text\":\"\t\"}", 0, protocol.CodeBadRequest, "malformed"},
		{"raw 0x1f", "{\"type\":\"msg\",\"room\":\"a\",\"text\":\"\x1f\"}", 0, protocol.CodeBadRequest, "malformed"},
		{"raw control in key", "{\"ty\x01pe\":\"ping\"}", 0, protocol.CodeBadRequest, "malformed"},

		// type.
		{"missing type", `{"room":"lobby"}`, 0, protocol.CodeBadRequest, "missing type"},
		{"unknown type", `{"type":"shout"}`, 0, protocol.CodeUnknownType, ""},
		{"type wrong case", `{"type":"PING"}`, 0, protocol.CodeUnknownType, ""},
		{"type empty", `{"type":""}`, 0, protocol.CodeUnknownType, ""},
		{"type response only", `{"type":"welcome"}`, 0, protocol.CodeUnknownType, ""},
		{"type unknown", `{"type":"unknown"}`, 0, protocol.CodeUnknownType, ""},
		{"type number", `{"type":1}`, 0, protocol.CodeBadRequest, "type must be a string"},
		{"type null", `{"type":null}`, 0, protocol.CodeBadRequest, "type must be a string"},
		{"type array", `{"type":["ping"]}`, 0, protocol.CodeBadRequest, "type must be a string"},
		{"type object", `{"type":{}}`, 0, protocol.CodeBadRequest, "type must be a string"},

		// Duplicates of known fields.
		{"duplicate type", `{"type":"ping","type":"ping"}`, 0, protocol.CodeBadRequest, "twice"},
		{"duplicate id", `{"type":"ping","id":1,"id":2}`, 0, protocol.CodeBadRequest, "twice"},
		{"duplicate room", `{"type":"join","room":"a","room":"b"}`, 0, protocol.CodeBadRequest, "twice"},
		{"duplicate text", `{"type":"msg","room":"a","text":"b","text":"c"}`, 0, protocol.CodeBadRequest, "twice"},
		{"duplicate to", `{"type":"dm","to":"a","to":"b","text":"c"}`, 0, protocol.CodeBadRequest, "twice"},
		{"duplicate after", `{"type":"members","room":"a","after":"a","after":"b"}`, 0, protocol.CodeBadRequest, "twice"},
		{"duplicate limit", `{"type":"members","room":"a","limit":1,"limit":2}`, 0, protocol.CodeBadRequest, "twice"},
		{"duplicate via escape", `{"type":"ping","t\u0079pe":"ping"}`, 0, protocol.CodeBadRequest, "twice"},

		// Missing fields.
		{"join without room", `{"type":"join"}`, 0, protocol.CodeBadRequest, "missing room"},
		{"leave without room", `{"type":"leave"}`, 0, protocol.CodeBadRequest, "missing room"},
		{"msg without room", `{"type":"msg","text":"hi"}`, 0, protocol.CodeBadRequest, "missing room"},
		{"msg without text", `{"type":"msg","room":"a"}`, 0, protocol.CodeBadRequest, "missing text"},
		{"dm without to", `{"type":"dm","text":"hi"}`, 0, protocol.CodeBadRequest, "missing to"},
		{"dm without text", `{"type":"dm","to":"bob"}`, 0, protocol.CodeBadRequest, "missing text"},
		{"members without room", `{"type":"members"}`, 0, protocol.CodeBadRequest, "missing room"},
		{"typing nowhere", `{"type":"typing"}`, 0, protocol.CodeBadRequest, "room or to"},
		{"typing in a room and to a user", `{"type":"typing","room":"a","to":"b"}`, 0, protocol.CodeBadRequest, "not both"},
		{"typing in a bad room", `{"type":"typing","room":"a b"}`, 0, protocol.CodeBadName, ""},
		{"typing to a bad name", `{"type":"typing","to":""}`, 0, protocol.CodeBadName, ""},

		// Fields of the wrong JSON type.
		{"room number", `{"type":"join","room":1}`, 0, protocol.CodeBadRequest, "room must be a string"},
		{"room null", `{"type":"join","room":null}`, 0, protocol.CodeBadRequest, "room must be a string"},
		{"text object", `{"type":"msg","room":"a","text":{"a":1}}`, 0, protocol.CodeBadRequest, "text must be a string"},
		{"to array", `{"type":"dm","to":["bob"],"text":"x"}`, 0, protocol.CodeBadRequest, "to must be a string"},
		{"after bool", `{"type":"members","room":"a","after":true}`, 0, protocol.CodeBadRequest, "after must be a string"},
		{"room wrong type and malformed", `{"type":"join","room":tru}`, 0, protocol.CodeBadRequest, "malformed"},
		{"room string malformed", `{"type":"join","room":"\q"}`, 0, protocol.CodeBadRequest, "malformed"},

		// Text.
		{"empty text", `{"type":"msg","room":"a","text":""}`, 0, protocol.CodeBadRequest, "empty"},
		{"empty dm text", `{"type":"dm","to":"b","text":""}`, 0, protocol.CodeBadRequest, "empty"},
		{"text over limit", `{"type":"msg","room":"a","text":"` + long + `x"}`, 0, protocol.CodeTooLarge, ""},
		{"dm text over limit", `{"type":"dm","to":"b","text":"` + long + `x"}`, 0, protocol.CodeTooLarge, ""},
		{"text over small limit", `{"type":"msg","room":"a","text":"abcd"}`, 3, protocol.CodeTooLarge, ""},
		{"multibyte text over limit", `{"type":"msg","room":"a","text":"éé"}`, 3, protocol.CodeTooLarge, ""},
		{"escaped text over limit", `{"type":"msg","room":"a","text":"\u00e9\u00e9"}`, 3, protocol.CodeTooLarge, ""},

		// Names.
		{"room empty", `{"type":"join","room":""}`, 0, protocol.CodeBadName, ""},
		{"room too long", `{"type":"join","room":"` + strings.Repeat("r", 33) + `"}`, 0, protocol.CodeBadName, ""},
		{"room with space", `{"type":"join","room":"a b"}`, 0, protocol.CodeBadName, ""},
		{"room with slash", `{"type":"leave","room":"a/b"}`, 0, protocol.CodeBadName, ""},
		{"room escaped slash", `{"type":"join","room":"a\/b"}`, 0, protocol.CodeBadName, ""},
		{"room non-ASCII", `{"type":"msg","room":"café","text":"x"}`, 0, protocol.CodeBadName, ""},
		{"room escaped NUL", `{"type":"members","room":"a\u0000"}`, 0, protocol.CodeBadName, ""},
		{"to empty", `{"type":"dm","to":"","text":"x"}`, 0, protocol.CodeBadName, ""},
		{"to bad", `{"type":"dm","to":"bob!","text":"x"}`, 0, protocol.CodeBadName, ""},
		{"to too long", `{"type":"dm","to":"` + strings.Repeat("b", 33) + `","text":"x"}`, 0, protocol.CodeBadName, ""},
		{"after too long", `{"type":"members","room":"a","after":"` + strings.Repeat("b", 33) + `"}`, 0, protocol.CodeBadName, ""},

		// limit.
		{"limit 0", `{"type":"members","room":"a","limit":0}`, 0, protocol.CodeBadRequest, "limit"},
		{"limit 1001", `{"type":"members","room":"a","limit":1001}`, 0, protocol.CodeBadRequest, "limit"},
		{"limit negative", `{"type":"members","room":"a","limit":-1}`, 0, protocol.CodeBadRequest, "limit"},
		{"limit minus zero", `{"type":"members","room":"a","limit":-0}`, 0, protocol.CodeBadRequest, "limit"},
		{"limit fraction", `{"type":"members","room":"a","limit":1.5}`, 0, protocol.CodeBadRequest, "limit"},
		{"limit integral float", `{"type":"members","room":"a","limit":10.0}`, 0, protocol.CodeBadRequest, "limit"},
		{"limit exponent", `{"type":"members","room":"a","limit":1e2}`, 0, protocol.CodeBadRequest, "limit"},
		{"limit string", `{"type":"members","room":"a","limit":"10"}`, 0, protocol.CodeBadRequest, "limit"},
		{"limit null", `{"type":"members","room":"a","limit":null}`, 0, protocol.CodeBadRequest, "limit"},
		{"limit huge", `{"type":"members","room":"a","limit":99999999999999999999}`, 0, protocol.CodeBadRequest, "limit"},
		{"limit leading zero", `{"type":"members","room":"a","limit":010}`, 0, protocol.CodeBadRequest, "malformed"},
		{"limit not integer for ping", `{"type":"ping","limit":"x"}`, 0, protocol.CodeBadRequest, "limit"},

		// id.
		{"id 65 bytes", `{"type":"ping","id":"` + strings.Repeat("i", 65) + `"}`, 0, protocol.CodeBadRequest, "id must be"},
		{"id 65 bytes unescaped", `{"type":"ping","id":"` + strings.Repeat(`\u0069`, 65) + `"}`, 0, protocol.CodeBadRequest, "id must be"},
		{"id number 65 digits", `{"type":"ping","id":` + strings.Repeat("9", 65) + `}`, 0, protocol.CodeBadRequest, "id must be"},
		{"id null", `{"type":"ping","id":null}`, 0, protocol.CodeBadRequest, "id must be"},
		{"id bool", `{"type":"ping","id":true}`, 0, protocol.CodeBadRequest, "id must be"},
		{"id object", `{"type":"ping","id":{}}`, 0, protocol.CodeBadRequest, "id must be"},
		{"id array", `{"type":"ping","id":[1]}`, 0, protocol.CodeBadRequest, "id must be"},
		{"id bad number", `{"type":"ping","id":1.}`, 0, protocol.CodeBadRequest, "id must be"},
		{"id bad string", `{"type":"ping","id":"\x"}`, 0, protocol.CodeBadRequest, "malformed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			maxText := tt.maxText
			if maxText == 0 {
				maxText = protocol.DefaultMaxText
			}
			_, err := decode(tt.in, maxText)
			if err == nil {
				t.Fatalf("Decode(%q) = nil, want %s", tt.in, tt.code)
			}
			if err.Code != tt.code || !strings.Contains(err.Message, tt.msg) {
				t.Errorf("Decode(%q) = %v, want code %s, message containing %q", tt.in, err, tt.code, tt.msg)
			}
		})
	}
}

// TestDecodeTextLimit checks that the limit counts unescaped bytes: a text of
// exactly maxText bytes passes however long its escaped form is.
func TestDecodeTextLimit(t *testing.T) {
	tests := []struct {
		name    string
		text    string // as written in JSON
		maxText int
		want    int // decoded length, or -1 for too_large
	}{
		{"ascii at limit", strings.Repeat("a", 10), 10, 10},
		{"ascii over limit", strings.Repeat("a", 11), 10, -1},
		{"escaped at limit", strings.Repeat(`\n`, 10), 10, 10},
		{"escaped over limit", strings.Repeat(`\n`, 11), 10, -1},
		{"u escapes at limit", strings.Repeat(`\u00e9`, 5), 10, 10},
		{"u escapes over limit", strings.Repeat(`\u00e9`, 5) + "a", 10, -1},
		{"pairs at limit", strings.Repeat(`\ud83d\ude00`, 4), 16, 16},
		{"pairs over limit", strings.Repeat(`\ud83d\ude00`, 4), 15, -1},
		{"zero means no limit", strings.Repeat("a", 100000), 0, 100000},
		{"default limit", strings.Repeat("a", protocol.DefaultMaxText), protocol.DefaultMaxText, protocol.DefaultMaxText},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, in := range []string{
				`{"type":"msg","room":"a","text":"` + tt.text + `"}`,
				`{"type":"dm","to":"a","text":"` + tt.text + `"}`,
			} {
				r, err := decode(in, tt.maxText)
				switch {
				case tt.want < 0 && (err == nil || err.Code != protocol.CodeTooLarge):
					t.Errorf("Decode = %v, want too_large", err)
				case tt.want >= 0 && err != nil:
					t.Errorf("Decode = %v", err)
				case tt.want >= 0 && len(r.Text) != tt.want:
					t.Errorf("len(Text) = %d, want %d", len(r.Text), tt.want)
				}
			}
		})
	}
}

// TestDecodeIDOnError pins which errors still report the id: the decoder
// stops at the first bad field, so an id that came before it is set (and a
// reply can carry it as ref) while one after it is not. Errors found after
// the whole object is read (missing or bad fields, limits) always keep it.
func TestDecodeIDOnError(t *testing.T) {
	tests := []struct {
		name   string
		in     string
		code   protocol.Code
		wantID string // "" for nil
	}{
		{"unknown type, id first", `{"id":1,"type":"shout"}`, protocol.CodeUnknownType, "1"},
		{"unknown type, id last", `{"type":"shout","id":1}`, protocol.CodeUnknownType, ""},
		{"type not a string, id first", `{"id":"a","type":2}`, protocol.CodeBadRequest, `"a"`},
		{"missing type", `{"id":"a","room":"x"}`, protocol.CodeBadRequest, `"a"`},
		{"missing type, id last", `{"room":"x","id":"a"}`, protocol.CodeBadRequest, `"a"`},
		{"malformed, id first", `{"id":"a\u00e9","type":"ping",}`, protocol.CodeBadRequest, `"aé"`},
		{"malformed, id last", `{"type":"ping",,"id":"a"}`, protocol.CodeBadRequest, ""},
		{"trailing garbage", `{"type":"ping","id":3}]`, protocol.CodeBadRequest, "3"},
		{"duplicate field, id first", `{"id":3,"type":"ping","type":"ping"}`, protocol.CodeBadRequest, "3"},
		{"bad limit, id first", `{"id":3,"type":"members","room":"a","limit":"x"}`, protocol.CodeBadRequest, "3"},
		{"bad limit, id last", `{"type":"members","room":"a","limit":"x","id":3}`, protocol.CodeBadRequest, ""},
		{"room not a string, id last", `{"type":"join","room":1,"id":3}`, protocol.CodeBadRequest, ""},
		{"missing room, id last", `{"type":"join","id":3}`, protocol.CodeBadRequest, "3"},
		{"bad room, id last", `{"type":"join","room":"a b","id":"x"}`, protocol.CodeBadName, `"x"`},
		{"empty text, id last", `{"type":"msg","room":"a","text":"","id":"x"}`, protocol.CodeBadRequest, `"x"`},
		{"text too large, id last", `{"type":"msg","room":"a","text":"` + strings.Repeat("x", protocol.DefaultMaxText+1) + `","id":"x"}`, protocol.CodeTooLarge, `"x"`},
		{"limit out of range, id last", `{"type":"members","room":"a","limit":0,"id":9}`, protocol.CodeBadRequest, "9"},
		{"bad to, id last", `{"type":"dm","to":"","text":"x","id":9}`, protocol.CodeBadName, "9"},
		{"id itself too long", `{"type":"ping","id":"` + strings.Repeat("i", 65) + `"}`, protocol.CodeBadRequest, ""},
		{"id too long after a good one", `{"type":"ping","id":1,"id":"` + strings.Repeat("i", 65) + `"}`, protocol.CodeBadRequest, "1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := decode(tt.in, protocol.DefaultMaxText)
			if err == nil || err.Code != tt.code {
				t.Fatalf("Decode(%q) = %v, want %s", tt.in, err, tt.code)
			}
			if string(r.ID) != tt.wantID || (tt.wantID == "") != (r.ID == nil) {
				t.Errorf("ID = %q (nil %v), want %q", r.ID, r.ID == nil, tt.wantID)
			}
		})
	}
}

// TestDecodeResets checks that a reused Request keeps nothing from its
// previous Decode.
func TestDecodeResets(t *testing.T) {
	var r protocol.Request
	if err := r.Decode([]byte(`{"type":"members","room":"a","after":"b","limit":5,"id":"x","text":"t","to":"u"}`), 0); err != nil {
		t.Fatal(err)
	}
	if err := r.Decode([]byte(`{"type":"ping"}`), 0); err != nil {
		t.Fatal(err)
	}
	want := fields{Type: protocol.TypePing, Limit: page}
	if got := fieldsOf(&r); got != want || r.ID != nil || r.Room != nil || r.Text != nil || r.To != nil || r.After != nil {
		t.Errorf("after reuse: %+v, want %+v with nil slices", got, want)
	}
}

// TestDecodeEmptyAfterIsSet checks that "after":"" is a present, empty
// cursor, not a missing one.
func TestDecodeEmptyAfterIsSet(t *testing.T) {
	r, err := decode(`{"type":"members","room":"a","after":""}`, 0)
	if err != nil {
		t.Fatal(err)
	}
	if r.After == nil || len(r.After) != 0 {
		t.Errorf("After = %q (nil %v), want empty and non-nil", r.After, r.After == nil)
	}
}

// TestDecodeIDIsValidJSON checks that every id comes back as raw JSON that
// encoding/json reads as the original value.
func TestDecodeIDIsValidJSON(t *testing.T) {
	ids := []string{
		`"plain"`, `""`, `"a\"b"`, `"\\"`, `"\/"`, `"\u00e9"`, `"\ud83d\ude00"`,
		`"\u0000\u001f\b\f\n\r\t"`, `"\u2028"`, `"é😀"`, `0`, `-1`, `3.25e-7`, `1E+2`,
	}
	for _, id := range ids {
		t.Run(id, func(t *testing.T) {
			r, err := decode(`{"type":"ping","id":`+id+`}`, 0)
			if err != nil {
				t.Fatal(err)
			}
			var want, got any
			if err := json.Unmarshal([]byte(id), &want); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(r.ID, &got); err != nil {
				t.Fatalf("ID %s is not JSON: %v", r.ID, err)
			}
			if got != want {
				t.Errorf("ID %s decodes to %#v, want %#v", r.ID, got, want)
			}
		})
	}
}

// TestDecodeMatchesEncodingJSON decodes valid requests with both Decode and
// encoding/json; every field must agree.
func TestDecodeMatchesEncodingJSON(t *testing.T) {
	inputs := []string{
		`{"type":"join","room":"lobby","id":1}`,
		`{"type":"leave","room":"x.y-z_0"}`,
		`{"type":"msg","room":"lobby","text":"hi \"there\"\n\t\\ \/ \u00e9 \ud83d\ude00 \u2028 \u0000 é世😀","id":"m-1"}`,
		`{"type":"dm","to":"bob","text":"\u005c\u0022","id":-12.5e3}`,
		`{"type":"members","room":"lobby","after":"b\u00f6b","limit":1000}`,
		`{"type":"members","room":"lobby"}`,
		`{"type":"rooms","id":"\ud83d\ude00"}`,
		`{"type":"ping","extra":{"nested":[1,2,{"x":"\u00e9"}]},"more":null}`,
		`  {  "text" : "` + strings.Repeat("0123456789", 400) + `" , "room":"R", "type":"msg" }  `,
	}
	for _, in := range inputs {
		var std stdRequest
		if err := json.Unmarshal([]byte(in), &std); err != nil {
			t.Fatalf("encoding/json: %v on %s", err, in)
		}
		r, err := decode(in, protocol.DefaultMaxText)
		if err != nil {
			t.Errorf("Decode(%s) = %v", in, err)
			continue
		}
		if got, want := fieldsOf(r), std.fields(); got != want {
			t.Errorf("Decode(%s)\n got %+v\nwant %+v (encoding/json)", in, got, want)
		}
	}
}

// stdRequest is a request as encoding/json reads it.
type stdRequest struct {
	Type  string          `json:"type"`
	ID    json.RawMessage `json:"id"`
	Room  string          `json:"room"`
	Text  string          `json:"text"`
	To    string          `json:"to"`
	After string          `json:"after"`
	Limit *int            `json:"limit"`
}

func (s *stdRequest) fields() fields {
	f := fields{Room: s.Room, Text: s.Text, To: s.To, After: s.After, Limit: page}
	for t := protocol.TypeJoin; t <= protocol.TypePing; t++ {
		if t.String() == s.Type {
			f.Type = t
		}
	}
	if s.Limit != nil {
		f.Limit = *s.Limit
	}
	if len(s.ID) > 0 && s.ID[0] == '"' {
		var id string
		json.Unmarshal(s.ID, &id)
		f.ID = string(protocol.AppendString(nil, id))
	} else {
		f.ID = string(s.ID)
	}
	return f
}

func TestTypeString(t *testing.T) {
	tests := []struct {
		typ  protocol.Type
		want string
	}{
		{protocol.TypeUnknown, "unknown"},
		{protocol.TypeJoin, "join"},
		{protocol.TypeLeave, "leave"},
		{protocol.TypeMsg, "msg"},
		{protocol.TypeDM, "dm"},
		{protocol.TypeMembers, "members"},
		{protocol.TypeRooms, "rooms"},
		{protocol.TypePing, "ping"},
		{protocol.TypeHistory, "history"},
		{protocol.TypeTyping, "typing"},
		{protocol.TypeTyping + 1, "unknown"},
		{255, "unknown"},
	}
	for _, tt := range tests {
		if got := tt.typ.String(); got != tt.want {
			t.Errorf("Type(%d).String() = %q, want %q", tt.typ, got, tt.want)
		}
	}
}

func TestErrorString(t *testing.T) {
	_, err := decode(`{}`, 0)
	if got, want := err.Error(), "protocol: bad_request: missing type"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

func TestDecodeNoAlloc(t *testing.T) {
	in := []byte(`{"type":"msg","room":"lobby","text":"hello \"world\" \u00e9\ud83d\ude00","id":"c-17"}`)
	buf := make([]byte, len(in))
	var r protocol.Request
	allocs := testing.AllocsPerRun(100, func() {
		copy(buf, in)
		if err := r.Decode(buf, protocol.DefaultMaxText); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("Decode allocates %v times per run, want 0", allocs)
	}
}

// TestDecodeRefusalNoAlloc checks the promise in errors.go that refusing a
// request allocates nothing, for every kind of refusal.
func TestDecodeRefusalNoAlloc(t *testing.T) {
	inputs := []string{
		`[]`,
		`{"type":"ping",}`,
		`{"type":"shout"}`,
		`{"type":1}`,
		`{"type":"ping","type":"ping"}`,
		`{"type":"join"}`,
		`{"type":"join","room":"a b"}`,
		`{"type":"msg","room":"a","text":""}`,
		`{"type":"members","room":"a","limit":0}`,
		`{"type":"ping","id":null}`,
		// Regression: a known field of the wrong JSON type built a new
		// *Error on every refusal.
		`{"type":"join","room":1}`,
		`{"type":"msg","room":"a","text":null}`,
		`{"type":"dm","to":[],"text":"x"}`,
		`{"type":"members","room":"a","after":{}}`,
	}
	for _, in := range inputs {
		buf := make([]byte, len(in))
		var r protocol.Request
		allocs := testing.AllocsPerRun(100, func() {
			copy(buf, in)
			if r.Decode(buf, protocol.DefaultMaxText) == nil {
				t.Fatalf("Decode(%s) accepted", in)
			}
		})
		if allocs != 0 {
			t.Errorf("Decode(%s) allocates %v times per run, want 0", in, allocs)
		}
	}
}

// TestDecodeInPlace documents the buffer contract: Decode rewrites escapes in
// place and the decoded slices point into the caller's buffer.
func TestDecodeInPlace(t *testing.T) {
	buf := []byte(`{"type":"msg","room":"a","text":"x\ny"}`)
	var r protocol.Request
	if err := r.Decode(buf, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(buf, []byte("x\ny")) {
		t.Errorf("buffer %q does not hold the unescaped text", buf)
	}
	buf[bytes.Index(buf, []byte("x\ny"))] = 'X'
	if string(r.Text) != "X\ny" {
		t.Errorf("Text = %q does not alias the buffer", r.Text)
	}
}
