package protocol_test

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"iter"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"nbchat/protocol"
)

// parseFrame checks that b is one final, unmasked server frame with no RSV
// bits and the shortest length encoding, and returns its opcode and payload.
func parseFrame(t *testing.T, b []byte) (op byte, payload []byte) {
	t.Helper()
	if len(b) < 2 {
		t.Fatalf("frame of %d bytes", len(b))
	}
	if b[0]&0x80 == 0 {
		t.Errorf("FIN not set: %#x", b[0])
	}
	if b[0]&0x70 != 0 {
		t.Errorf("RSV bits set: %#x", b[0])
	}
	if b[1]&0x80 != 0 {
		t.Errorf("server frame is masked")
	}
	n, hdr := uint64(b[1]&0x7F), 2
	switch n {
	case 126:
		if len(b) < 4 {
			t.Fatalf("short 16-bit length header")
		}
		n, hdr = uint64(binary.BigEndian.Uint16(b[2:])), 4
		if n < 126 {
			t.Errorf("length %d uses the 16-bit form", n)
		}
	case 127:
		if len(b) < 10 {
			t.Fatalf("short 64-bit length header")
		}
		n, hdr = binary.BigEndian.Uint64(b[2:]), 10
		if n <= 0xFFFF || n>>63 != 0 {
			t.Errorf("length %d uses the 64-bit form", n)
		}
	}
	if uint64(len(b)-hdr) != n {
		t.Fatalf("header says %d payload bytes, frame has %d", n, len(b)-hdr)
	}
	return b[0] & 0x0F, b[hdr:]
}

// checkTextFrame checks that f is a text frame whose payload is a JSON object and
// returns the payload.
func checkTextFrame(t *testing.T, f *protocol.Frame) []byte {
	t.Helper()
	op, payload := parseFrame(t, f.Bytes())
	if op != protocol.OpText {
		t.Errorf("opcode %#x, want text", op)
	}
	if !bytes.Equal(payload, f.Payload()) {
		t.Errorf("Payload() = %q, frame carries %q", f.Payload(), payload)
	}
	if !json.Valid(payload) {
		t.Errorf("payload is not JSON: %s", payload)
	}
	return payload
}

func names(s ...string) iter.Seq[string] { return slices.Values(s) }

func roomsSeq(kv ...any) iter.Seq2[string, int] {
	return func(yield func(string, int) bool) {
		for i := 0; i < len(kv); i += 2 {
			if !yield(kv[i].(string), kv[i+1].(int)) {
				return
			}
		}
	}
}

var errNotMember = &protocol.Error{Code: protocol.CodeNotMember, Message: "not a member of lobby"}

// encoderTests builds one frame with every encoder. golden is the exact
// payload; doc is the message as doc.go shows it (plus any ref), compared as
// JSON values so field order does not matter there.
var encoderTests = []struct {
	name   string
	frame  func() *protocol.Frame
	golden string
	doc    string
}{
	{
		"welcome", func() *protocol.Frame { return protocol.Welcome("alice", 4) },
		`{"type":"welcome","name":"alice","version":1,"dm_seq":4}`,
		`{"type":"welcome","name":"alice","version":1,"dm_seq":4}`,
	},
	{
		"joined", func() *protocol.Frame {
			return protocol.Joined([]byte(`"j1"`), "lobby", 2, names("alice", "bob"), 16, protocol.RecoveryNone)
		},
		`{"type":"joined","room":"lobby","count":2,"members":["alice","bob"],"seq":16,"ref":"j1"}`,
		`{"type":"joined","room":"lobby","count":2,"members":["alice","bob"],"seq":16,"ref":"j1"}`,
	},
	{
		"joined without members", func() *protocol.Frame { return protocol.Joined(nil, "lobby", 0, nil, 0, protocol.RecoveryNone) },
		`{"type":"joined","room":"lobby","count":0,"members":[],"seq":0}`,
		`{"type":"joined","room":"lobby","count":0,"members":[],"seq":0}`,
	},
	{
		"joined recovered", func() *protocol.Frame { return protocol.Joined(nil, "lobby", 1, nil, 9, protocol.RecoveryFull) },
		`{"type":"joined","room":"lobby","count":1,"members":[],"seq":9,"recovered":true}`,
		`{"type":"joined","room":"lobby","count":1,"members":[],"seq":9,"recovered":true}`,
	},
	{
		"joined not recovered", func() *protocol.Frame {
			return protocol.Joined(nil, "lobby", 1, nil, 9, protocol.RecoveryPartial)
		},
		`{"type":"joined","room":"lobby","count":1,"members":[],"seq":9,"recovered":false}`,
		`{"type":"joined","room":"lobby","count":1,"members":[],"seq":9,"recovered":false}`,
	},
	{
		"ack", func() *protocol.Frame { return protocol.Ack([]byte(`"m1"`), "lobby", 17) },
		`{"type":"ack","room":"lobby","seq":17,"ref":"m1"}`,
		`{"type":"ack","room":"lobby","seq":17,"ref":"m1"}`,
	},
	{
		"dm ack", func() *protocol.Frame { return protocol.AckDM([]byte(`"d1"`), "bob") },
		`{"type":"ack","to":"bob","ref":"d1"}`,
		`{"type":"ack","to":"bob","ref":"d1"}`,
	},
	{
		"history", func() *protocol.Frame {
			return protocol.History(nil, "lobby", func(yield func([]byte) bool) {
				_ = yield([]byte(`{"type":"msg","seq":1}`)) && yield([]byte(`{"type":"msg","seq":2}`))
			}, true)
		},
		`{"type":"history","room":"lobby","messages":[{"type":"msg","seq":1},{"type":"msg","seq":2}],"more":true}`,
		`{"type":"history","room":"lobby","messages":[{"type":"msg","seq":1},{"type":"msg","seq":2}],"more":true}`,
	},
	{
		"left", func() *protocol.Frame { return protocol.Left([]byte(`7`), "lobby") },
		`{"type":"left","room":"lobby","ref":7}`,
		`{"type":"left","room":"lobby","ref":7}`,
	},
	{
		"msg", func() *protocol.Frame { return protocol.Msg("lobby", "alice", []byte("hi"), 17, 1763770000123) },
		`{"type":"msg","room":"lobby","from":"alice","text":"hi","seq":17,"ts":1763770000123}`,
		`{"type":"msg","room":"lobby","from":"alice","text":"hi","seq":17,"ts":1763770000123}`,
	},
	{
		"msg escaped", func() *protocol.Frame {
			return protocol.Msg("lobby", "alice", []byte("a\"b\\c\nd\x00é😀\u2028"), 1<<64-1, -1)
		},
		`{"type":"msg","room":"lobby","from":"alice","text":"a\"b\\c\nd\u0000é😀` + "\u2028" + `","seq":18446744073709551615,"ts":-1}`,
		`{"ts":-1,"seq":18446744073709551615,"text":"a\"b\\c\nd\u0000\u00e9\ud83d\ude00\u2028","from":"alice","room":"lobby","type":"msg"}`,
	},
	{
		"dm", func() *protocol.Frame { return protocol.DM("alice", "bob", []byte("hi"), 1763770000123, 3) },
		`{"type":"dm","from":"alice","to":"bob","text":"hi","ts":1763770000123,"seq":3}`,
		`{"type":"dm","from":"alice","to":"bob","text":"hi","ts":1763770000123,"seq":3}`,
	},
	{
		"typing in a room", func() *protocol.Frame { return protocol.Typing("lobby", "alice", "") },
		`{"type":"typing","room":"lobby","from":"alice"}`,
		`{"type":"typing","room":"lobby","from":"alice"}`,
	},
	{
		"typing to a user", func() *protocol.Frame { return protocol.Typing("", "alice", "bob") },
		`{"type":"typing","from":"alice","to":"bob"}`,
		`{"type":"typing","from":"alice","to":"bob"}`,
	},
	{
		"presence event", func() *protocol.Frame { return protocol.PresenceEvent("lobby", protocol.EventJoin, "carol", 3) },
		`{"type":"presence","room":"lobby","event":"join","name":"carol","count":3}`,
		`{"type":"presence","room":"lobby","event":"join","name":"carol","count":3}`,
	},
	{
		"presence leave", func() *protocol.Frame { return protocol.PresenceEvent("lobby", protocol.EventLeave, "carol", 2) },
		`{"type":"presence","room":"lobby","event":"leave","name":"carol","count":2}`,
		`{"type":"presence","room":"lobby","event":"leave","name":"carol","count":2}`,
	},
	{
		"presence batch", func() *protocol.Frame { return protocol.PresenceBatch("lobby", []string{"carol"}, nil, 3) },
		`{"type":"presence","room":"lobby","joined":["carol"],"left":[],"count":3}`,
		`{"type":"presence","room":"lobby","joined":["carol"],"left":[],"count":3}`,
	},
	{
		"presence batch both", func() *protocol.Frame {
			return protocol.PresenceBatch("lobby", []string{"a", "b"}, []string{"c"}, 12)
		},
		`{"type":"presence","room":"lobby","joined":["a","b"],"left":["c"],"count":12}`,
		`{"type":"presence","room":"lobby","joined":["a","b"],"left":["c"],"count":12}`,
	},
	{
		"members", func() *protocol.Frame { return protocol.Members(nil, "lobby", 3, names("carol")) },
		`{"type":"members","room":"lobby","count":3,"members":["carol"]}`,
		`{"type":"members","room":"lobby","count":3,"members":["carol"]}`,
	},
	{
		"rooms", func() *protocol.Frame { return protocol.Rooms(nil, roomsSeq("lobby", 3)) },
		`{"type":"rooms","rooms":[{"name":"lobby","count":3}]}`,
		`{"type":"rooms","rooms":[{"name":"lobby","count":3}]}`,
	},
	{
		"rooms several", func() *protocol.Frame { return protocol.Rooms([]byte(`"r"`), roomsSeq("a", 1, "b", 2)) },
		`{"type":"rooms","rooms":[{"name":"a","count":1},{"name":"b","count":2}],"ref":"r"}`,
		`{"type":"rooms","rooms":[{"name":"a","count":1},{"name":"b","count":2}],"ref":"r"}`,
	},
	{
		"rooms empty", func() *protocol.Frame { return protocol.Rooms(nil, roomsSeq()) },
		`{"type":"rooms","rooms":[]}`,
		`{"type":"rooms","rooms":[]}`,
	},
	{
		"pong", func() *protocol.Frame { return protocol.Pong(nil) },
		`{"type":"pong"}`,
		`{"type":"pong"}`,
	},
	{
		"pong ref", func() *protocol.Frame { return protocol.Pong([]byte(`-1.5e3`)) },
		`{"type":"pong","ref":-1.5e3}`,
		`{"type":"pong","ref":-1500}`,
	},
	{
		"error", func() *protocol.Frame { return protocol.Err(nil, errNotMember) },
		`{"type":"error","code":"not_member","message":"not a member of lobby"}`,
		`{"type":"error","code":"not_member","message":"not a member of lobby"}`,
	},
	{
		"error ref", func() *protocol.Frame { return protocol.Err([]byte(`"a\"b"`), errNotMember) },
		`{"type":"error","code":"not_member","message":"not a member of lobby","ref":"a\"b"}`,
		`{"type":"error","code":"not_member","message":"not a member of lobby","ref":"a\"b"}`,
	},
}

func TestEncodeGolden(t *testing.T) {
	for _, tt := range encoderTests {
		t.Run(tt.name, func(t *testing.T) {
			f := tt.frame()
			defer f.Release()
			payload := checkTextFrame(t, f)
			if string(payload) != tt.golden {
				t.Errorf("payload\n got %s\nwant %s", payload, tt.golden)
			}
		})
	}
}

func TestEncodeDocumentedFields(t *testing.T) {
	for _, tt := range encoderTests {
		t.Run(tt.name, func(t *testing.T) {
			f := tt.frame()
			defer f.Release()
			var got, want map[string]any
			if err := json.Unmarshal(checkTextFrame(t, f), &got); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal([]byte(tt.doc), &want); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("payload decodes to\n%v\nwant\n%v", got, want)
			}
		})
	}
}

// TestEncodeRefVerbatim checks that every encoder taking a ref copies it
// byte for byte as the last field, and leaves "ref" out when there is none.
func TestEncodeRefVerbatim(t *testing.T) {
	encoders := []struct {
		name string
		enc  func(ref []byte) *protocol.Frame
	}{
		{"joined", func(ref []byte) *protocol.Frame {
			return protocol.Joined(ref, "r", 1, names("a"), 1, protocol.RecoveryNone)
		}},
		{"left", func(ref []byte) *protocol.Frame { return protocol.Left(ref, "r") }},
		{"members", func(ref []byte) *protocol.Frame { return protocol.Members(ref, "r", 1, names("a")) }},
		{"rooms", func(ref []byte) *protocol.Frame { return protocol.Rooms(ref, roomsSeq("r", 1)) }},
		{"pong", func(ref []byte) *protocol.Frame { return protocol.Pong(ref) }},
		{"error", func(ref []byte) *protocol.Frame { return protocol.Err(ref, errNotMember) }},
		{"dm ack", func(ref []byte) *protocol.Frame { return protocol.AckDM(ref, "bob") }},
	}
	refs := []string{`1`, `-0.5E+7`, `""`, `"abc"`, `"a\"\\\u0001é😀"`, `"` + strings.Repeat("x", 64) + `"`}
	for _, e := range encoders {
		t.Run(e.name, func(t *testing.T) {
			for _, ref := range refs {
				f := e.enc([]byte(ref))
				p := checkTextFrame(t, f)
				if !bytes.HasSuffix(p, []byte(`,"ref":`+ref+`}`)) {
					t.Errorf("ref %s: payload %s does not end in it", ref, p)
				}
				f.Release()
			}
			// Regression: an empty but non-nil ref (a copied absent id)
			// produced `,"ref":}`, which is not JSON.
			for _, ref := range [][]byte{nil, {}} {
				f := e.enc(ref)
				p := checkTextFrame(t, f)
				if bytes.Contains(p, []byte(`"ref"`)) {
					t.Errorf("ref %#v: payload %s has a ref", ref, p)
				}
				f.Release()
			}
		})
	}
}

// TestEncodeRefFromDecode checks that an id read by Decode comes back as a
// ref that decodes to the id's value.
func TestEncodeRefFromDecode(t *testing.T) {
	for _, id := range []string{`"x\u00e9\"\n\/"`, `12`, `"\ud83d\ude00"`} {
		r, err := decode(`{"type":"ping","id":`+id+`}`, 0)
		if err != nil {
			t.Fatal(err)
		}
		f := protocol.Pong(r.ID)
		var got, want struct{ Ref any }
		if err := json.Unmarshal(checkTextFrame(t, f), &got); err != nil {
			t.Fatal(err)
		}
		json.Unmarshal([]byte(`{"ref":`+id+`}`), &want)
		if got != want {
			t.Errorf("id %s: ref %#v, want %#v", id, got.Ref, want.Ref)
		}
		f.Release()
	}
}

// msgOverhead is the payload length of a Msg frame with an empty text.
func msgOverhead() int {
	f := protocol.Msg("lobby", "alice", nil, 1, 2)
	defer f.Release()
	return len(f.Payload())
}

// TestEncodeLengths checks the three length encodings at their boundaries,
// for raw frames and for Msg frames whose text fills the payload to size.
func TestEncodeLengths(t *testing.T) {
	over := msgOverhead()
	for _, size := range []int{0, 1, 125, 126, 127, 65535, 65536, 70000} {
		wantHdr := 2
		switch {
		case size > 0xFFFF:
			wantHdr = 10
		case size > 125:
			wantHdr = 4
		}
		t.Run("kind=raw,size="+strconv.Itoa(size), func(t *testing.T) {
			payload := bytes.Repeat([]byte{'p'}, size)
			f := protocol.NewFrame(protocol.OpBinary, payload)
			defer f.Release()
			op, got := parseFrame(t, f.Bytes())
			if op != protocol.OpBinary || !bytes.Equal(got, payload) {
				t.Errorf("opcode %#x, payload of %d bytes; want binary, %d", op, len(got), size)
			}
			if len(f.Bytes()) != wantHdr+size {
				t.Errorf("frame is %d bytes, want %d header + %d", len(f.Bytes()), wantHdr, size)
			}
		})
		if size < over {
			continue
		}
		t.Run("kind=msg,size="+strconv.Itoa(size), func(t *testing.T) {
			text := strings.Repeat("t", size-over)
			f := protocol.Msg("lobby", "alice", []byte(text), 1, 2)
			defer f.Release()
			p := checkTextFrame(t, f)
			if len(p) != size || len(f.Bytes()) != wantHdr+size {
				t.Fatalf("payload %d bytes in a %d-byte frame, want %d in %d", len(p), len(f.Bytes()), size, wantHdr+size)
			}
			var m struct{ Text string }
			if err := json.Unmarshal(p, &m); err != nil || m.Text != text {
				t.Errorf("text of %d bytes does not round-trip: %v", len(text), err)
			}
		})
	}
}

var appendStringTests = []struct {
	name string
	in   string
	want string // AppendString's exact output
}{
	{"empty", "", `""`},
	{"plain", "hello", `"hello"`},
	{"quote", `a"b`, `"a\"b"`},
	{"backslash", `a\b`, `"a\\b"`},
	{"solidus kept", "a/b", `"a/b"`},
	{"newline", "a\nb", `"a\nb"`},
	{"carriage return", "\r", `"\r"`},
	{"tab", "\t", `"\t"`},
	{"NUL", "\x00", `"\u0000"`},
	{"backspace", "\b", `"\u0008"`},
	{"form feed", "\f", `"\u000c"`},
	{"unit separator", "\x1f", `"\u001f"`},
	{"space kept", " ", `" "`},
	{"DEL kept", "\x7f", "\"\x7f\""},
	{"latin kept", "café", `"café"`},
	{"CJK kept", "世界", `"世界"`},
	{"emoji kept", "😀👍🏽", `"😀👍🏽"`},
	{"U+2028 kept", "\u2028\u2029", "\"\u2028\u2029\""},
	{"max rune kept", "\U0010FFFF", "\"\U0010FFFF\""},
	{"BOM kept", "\uFEFF", "\"\uFEFF\""},
	{"html kept", "<a href='x'>&</a>", `"<a href='x'>&</a>"`},
	{"escape at ends", "\"x\"", `"\"x\""`},
	{"only escapes", "\"\\\n", `"\"\\\n"`},
	{"all controls", "\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f\x10\x11\x12\x13\x14\x15\x16\x17\x18\x19\x1a\x1b\x1c\x1d\x1e\x1f",
		`"\u0000\u0001\u0002\u0003\u0004\u0005\u0006\u0007\u0008\t\n\u000b\u000c\r\u000e\u000f\u0010\u0011\u0012\u0013\u0014\u0015\u0016\u0017\u0018\u0019\u001a\u001b\u001c\u001d\u001e\u001f"`},
}

func TestAppendString(t *testing.T) {
	for _, tt := range appendStringTests {
		t.Run(tt.name, func(t *testing.T) {
			prefix := []byte("pre:")
			for _, got := range [][]byte{
				protocol.AppendString(prefix[:len(prefix):len(prefix)], tt.in),
				protocol.AppendString(prefix[:len(prefix):len(prefix)], []byte(tt.in)),
			} {
				if !bytes.HasPrefix(got, prefix) {
					t.Fatalf("output %q lost the prefix", got)
				}
				got = got[len(prefix):]
				if string(got) != tt.want {
					t.Errorf("AppendString(%q) = %s, want %s", tt.in, got, tt.want)
				}
				var back string
				if err := json.Unmarshal(got, &back); err != nil || back != tt.in {
					t.Errorf("json.Unmarshal(%s) = %q, %v; want %q", got, back, err, tt.in)
				}
			}
		})
	}
}

// TestAppendStringMatchesDecode checks that Decode reads back what
// AppendString writes, for every table string that is a valid text.
func TestAppendStringMatchesDecode(t *testing.T) {
	for _, tt := range appendStringTests {
		if tt.in == "" {
			continue
		}
		in := `{"type":"msg","room":"a","text":` + tt.want + `}`
		r, err := decode(in, 0)
		if err != nil || string(r.Text) != tt.in {
			t.Errorf("%s: Decode(%s) = %q, %v; want %q", tt.name, in, r.Text, err, tt.in)
		}
	}
}

func TestClose(t *testing.T) {
	tests := []struct {
		name   string
		code   int
		reason string
		want   string // the reason as sent
	}{
		{"no reason", 1000, "", ""},
		{"short", 1001, "going away", "going away"},
		{"123 bytes kept", 1008, strings.Repeat("r", 123), strings.Repeat("r", 123)},
		{"124 bytes cut", 1008, strings.Repeat("r", 124), strings.Repeat("r", 123)},
		{"long cut", 1009, strings.Repeat("r", 1000), strings.Repeat("r", 123)},
		{"multibyte ending at 123 kept", 1011, strings.Repeat("r", 121) + "é", strings.Repeat("r", 121) + "é"},
		{"two-byte rune across the cut", 1011, strings.Repeat("r", 122) + "é", strings.Repeat("r", 122)},
		{"four-byte rune across the cut", 1011, strings.Repeat("r", 121) + "😀", strings.Repeat("r", 121)},
		{"four-byte rune one past", 1011, strings.Repeat("r", 120) + "😀", strings.Repeat("r", 120)},
		{"four-byte rune ending at 123", 1011, strings.Repeat("r", 119) + "😀x", strings.Repeat("r", 119) + "😀"},
		{"all multibyte", 4000, strings.Repeat("世", 100), strings.Repeat("世", 41)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := protocol.Close(tt.code, tt.reason)
			defer f.Release()
			op, p := parseFrame(t, f.Bytes())
			if op != protocol.OpClose {
				t.Errorf("opcode %#x, want close", op)
			}
			if len(p) > 125 || len(p) < 2 {
				t.Fatalf("close payload of %d bytes", len(p))
			}
			if code := int(binary.BigEndian.Uint16(p)); code != tt.code {
				t.Errorf("code %d, want %d", code, tt.code)
			}
			if got := string(p[2:]); got != tt.want {
				t.Errorf("reason %q (%d bytes), want %q (%d bytes)", got, len(got), tt.want, len(tt.want))
			}
			if !utf8.Valid(p[2:]) {
				t.Errorf("reason is not UTF-8")
			}
		})
	}
}

func TestNewFrameOpcodes(t *testing.T) {
	for _, op := range []byte{protocol.OpText, protocol.OpBinary, protocol.OpClose, protocol.OpPing, protocol.OpPong} {
		f := protocol.NewFrame(op, []byte("x"))
		if got, p := parseFrame(t, f.Bytes()); got != op || string(p) != "x" {
			t.Errorf("NewFrame(%#x) = opcode %#x payload %q", op, got, p)
		}
		f.Release()
	}
}

// TestFrameRetainedSurvivesReuse checks that a frame still referenced is not
// handed out again by the pool: its bytes stay put while many other frames
// are built and released.
func TestFrameRetainedSurvivesReuse(t *testing.T) {
	f := protocol.Msg("lobby", "alice", []byte("keep me"), 1, 2)
	want := bytes.Clone(f.Bytes())
	f.Retain(3) // four references
	f.Release()
	f.Release() // two left
	for i := range 1000 {
		g := protocol.Msg("other", "bob", []byte(strings.Repeat("z", i%200)), uint64(i), 3)
		h := protocol.Close(1000, "bye")
		g.Release()
		h.Release()
	}
	if !bytes.Equal(f.Bytes(), want) {
		t.Fatalf("retained frame changed:\n got %q\nwant %q", f.Bytes(), want)
	}
	f.Release()
	if !bytes.Equal(f.Bytes(), want) {
		t.Fatalf("frame changed before its last release")
	}
	f.Release()
}

// TestFrameReleasedTooOftenPanics checks that a release with no reference
// left is caught rather than corrupting the pool silently.
func TestFrameReleasedTooOftenPanics(t *testing.T) {
	for _, retain := range []int{0, 1, 5} {
		f := protocol.Pong(nil)
		f.Retain(retain)
		for range retain + 1 {
			f.Release()
		}
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("retain %d: release %d times did not panic", retain, retain+2)
				}
			}()
			f.Release()
		}()
	}
}

func TestMsgEncodeNoAlloc(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items at random under the race detector")
	}
	text := []byte(strings.Repeat("hello world ", 40))
	for range 10 {
		protocol.Msg("lobby", "alice", text, 1, 2).Release()
	}
	allocs := testing.AllocsPerRun(1000, func() {
		f := protocol.Msg("lobby", "alice", text, 17, 1763770000123)
		f.Release()
	})
	if allocs != 0 {
		t.Errorf("Msg + Release allocates %v times per run, want 0", allocs)
	}
}

// TestEncodeLargeNotPooled checks that frames over the pool limit still work
// when released and that small frames built afterwards are sound.
func TestEncodeLargeNotPooled(t *testing.T) {
	big := protocol.Msg("r", "a", bytes.Repeat([]byte{'b'}, 100000), 1, 2)
	checkTextFrame(t, big)
	big.Release()
	small := protocol.Msg("r", "a", []byte("s"), 1, 2)
	defer small.Release()
	if p := checkTextFrame(t, small); !bytes.Contains(p, []byte(`"text":"s"`)) {
		t.Errorf("small frame after big: %s", p)
	}
}

// TestFrameCompact: a frame only its caller holds is copied into a buffer
// of its own size with the same bytes; a shared one is left alone, and so
// is one that fills most of its buffer.
func TestFrameCompact(t *testing.T) {
	f := protocol.Msg("lobby", "alice", []byte("short"), 1, 2)
	want, payload := bytes.Clone(f.Bytes()), bytes.Clone(f.Payload())
	f.Retain(1) // queued to a connection
	if c := f.Compact(); c != nil {
		t.Fatal("a frame still queued was compacted")
	}
	f.Release()
	c := f.Compact()
	if c == nil || c == f {
		t.Fatalf("Compact = %p for a lone short frame %p, want a copy", c, f)
	}
	f.Release()
	for i := range 100 { // reuse f's buffer
		protocol.Msg("other", "bob", []byte(strings.Repeat("z", i)), uint64(i), 3).Release()
	}
	if !bytes.Equal(c.Bytes(), want) || !bytes.Equal(c.Payload(), payload) {
		t.Fatalf("compacted frame %q, want %q", c.Bytes(), want)
	}
	if cap(c.Bytes()) >= 2*len(want) {
		t.Fatalf("compacted frame of %d bytes has room for %d", len(want), cap(c.Bytes()))
	}
	c.Release()

	big := protocol.Msg("lobby", "alice", []byte(strings.Repeat("y", 400)), 1, 2)
	if c := big.Compact(); c != big {
		t.Fatal("a frame filling its buffer was copied")
	}
	big.Release()
}
