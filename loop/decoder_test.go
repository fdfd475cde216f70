package loop

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

// First header byte bits for the test frame builders.
const (
	decFin  = 0x80
	decRSV1 = 0x40
	decRSV2 = 0x20
	decRSV3 = 0x10
)

// decEvent is one handler callback, with the payload copied out.
type decEvent struct {
	kind       string // "msg", "ping", "pong" or "close"
	text       bool
	compressed bool
	code       int
	payload    string
}

// String makes test failures readable.
func (e decEvent) String() string {
	p := e.payload
	if len(p) > 40 {
		p = fmt.Sprintf("%.20q...(%d bytes)", p, len(p))
	} else {
		p = fmt.Sprintf("%q", p)
	}
	return fmt.Sprintf("%s(text=%v compressed=%v code=%d %s)", e.kind, e.text, e.compressed, e.code, p)
}

// decRecorder is a frameHandler that records every callback.
type decRecorder struct{ events []decEvent }

func (r *decRecorder) onMessage(text, compressed bool, payload []byte) {
	r.events = append(r.events, decEvent{kind: "msg", text: text, compressed: compressed, payload: string(payload)})
}
func (r *decRecorder) onPing(payload []byte) {
	r.events = append(r.events, decEvent{kind: "ping", payload: string(payload)})
}
func (r *decRecorder) onPong(payload []byte) {
	r.events = append(r.events, decEvent{kind: "pong", payload: string(payload)})
}
func (r *decRecorder) onClose(code int, reason []byte) {
	r.events = append(r.events, decEvent{kind: "close", code: code, payload: string(reason)})
}

// decMsg, decText, decBinary, decPing, decPong and decCloseEvent build expected events.
func decMsg(text, compressed bool, p string) decEvent {
	return decEvent{kind: "msg", text: text, compressed: compressed, payload: p}
}
func decText(p string) decEvent              { return decMsg(true, false, p) }
func decBinary(p string) decEvent            { return decMsg(false, false, p) }
func decPing(p string) decEvent              { return decEvent{kind: "ping", payload: p} }
func decPong(p string) decEvent              { return decEvent{kind: "pong", payload: p} }
func decCloseEvent(c int, r string) decEvent { return decEvent{kind: "close", code: c, payload: r} }

// decHeader builds a client frame header announcing length bytes. A nil key means unmasked.
// force64 uses the 8-byte length form whatever the length.
func decHeader(b0 byte, length uint64, key []byte, force64 bool) []byte {
	h := []byte{b0, 0}
	switch {
	case force64 || length > 65535:
		h[1] = 127
		h = binary.BigEndian.AppendUint64(h, length)
	case length > 125:
		h[1] = 126
		h = binary.BigEndian.AppendUint16(h, uint16(length))
	default:
		h[1] = byte(length)
	}
	if key != nil {
		h[1] |= 0x80
		h = append(h, key...)
	}
	return h
}

// decFrame builds a masked client frame with a random mask key, as a browser would.
func decFrame(b0 byte, payload string) []byte {
	var key [4]byte
	binary.LittleEndian.PutUint32(key[:], rand.Uint32())
	return decFrameKey(b0, payload, key)
}

// decFrameKey builds a masked client frame with the given mask key.
func decFrameKey(b0 byte, payload string, key [4]byte) []byte {
	f := decHeader(b0, uint64(len(payload)), key[:], false)
	start := len(f)
	f = append(f, payload...)
	for i := range f[start:] {
		f[start+i] ^= key[i%4]
	}
	return f
}

// decUnmasked builds an unmasked frame, which a client must never send.
func decUnmasked(b0 byte, payload string) []byte {
	return append(decHeader(b0, uint64(len(payload)), nil, false), payload...)
}

// decCloseFrame builds a masked close frame with a code and a reason.
func decCloseFrame(code int, reason string) []byte {
	return decFrame(decFin|decOpClose, string(binary.BigEndian.AppendUint16(nil, uint16(code)))+reason)
}

// decCat concatenates frames into one stream.
func decCat(frames ...[]byte) []byte { return bytes.Join(frames, nil) }

// decResult is what a decoder produced for a stream: the callbacks and the close code of the
// error (0 for none).
type decResult struct {
	events []decEvent
	code   int
}

// decConfig is the decoder configuration a case runs with.
type decConfig struct {
	maxMessage int32
	allowRSV1  bool
}

// decRun feeds chunks to a fresh decoder in order and checks the invariants that hold whatever
// the chunking: no feed after an error, a sticky error, no buffer held between messages.
func decRun(t testing.TB, cfg decConfig, chunks [][]byte) decResult {
	t.Helper()
	d := &decoder{maxMessage: cfg.maxMessage, allowRSV1: cfg.allowRSV1}
	defer d.release()
	var r decRecorder
	for _, c := range chunks {
		err := d.feed(c, &r)
		if err != nil {
			var pe *ProtocolError
			if !errors.As(err, &pe) {
				t.Fatalf("feed returned %T %v, want *ProtocolError", err, err)
			}
			if !strings.HasPrefix(err.Error(), "loop: ") {
				t.Fatalf("error %q lacks the loop: prefix", err)
			}
			if d.msg != nil || d.ctl != nil {
				t.Fatalf("decoder holds buffers after failing")
			}
			n := len(r.events)
			if again := d.feed([]byte{0x81, 0x80, 0, 0, 0, 0}, &r); again != err || len(r.events) != n {
				t.Fatalf("feed after error returned %v and %d new events, want the same error and none", again, len(r.events)-n)
			}
			return decResult{r.events, pe.Code}
		}
		idle := d.stage == decStageHeader && d.hdrLen == 0 && !d.msgOpen
		if (idle || d.stage == decStageClosed) && (d.msg != nil || d.ctl != nil) {
			t.Fatalf("decoder holds a buffer while idle (stage %d)", d.stage)
		}
	}
	return decResult{events: r.events}
}

// decChunkings returns named ways to cut input into feeds: whole, one byte at a time, and split
// in two at every point. Inputs over 4 KiB are split near both ends and at a stride, which covers
// every header shape without quadratic cost. Each chunking gets its own copy of input because
// the decoder unmasks in place.
func decChunkings(input []byte) (names []string, chunkings [][][]byte) {
	add := func(name string, cuts ...int) {
		buf := bytes.Clone(input)
		var chunks [][]byte
		prev := 0
		for _, c := range append(cuts, len(buf)) {
			chunks = append(chunks, buf[prev:c])
			prev = c
		}
		names = append(names, name)
		chunkings = append(chunkings, chunks)
	}
	add("whole")
	bytewise := make([]int, 0, len(input))
	for i := 1; i < len(input); i++ {
		bytewise = append(bytewise, i)
	}
	add("bytewise", bytewise...)
	for i := 0; i <= len(input); i++ {
		if len(input) <= 4096 || i < 64 || i > len(input)-64 || i%997 == 0 {
			add(fmt.Sprintf("split@%d", i), i)
		}
	}
	return names, chunkings
}

// decCase is one stream with the callbacks and error code every chunking must give.
type decCase struct {
	name  string
	cfg   decConfig
	input []byte
	want  []decEvent
	code  int // 0: no error
}

// decCheck runs c under every chunking.
func decCheck(t *testing.T, c decCase) {
	t.Helper()
	names, chunkings := decChunkings(c.input)
	for i, chunks := range chunkings {
		got := decRun(t, c.cfg, chunks)
		if got.code != c.code || !slices.Equal(got.events, c.want) {
			t.Fatalf("%s: %s:\ngot  code %d events %v\nwant code %d events %v", c.name, names[i], got.code, got.events, c.code, c.want)
		}
	}
}

// decRunCases runs each case as a subtest.
func decRunCases(t *testing.T, cases []decCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { decCheck(t, c) })
	}
}

// decPayload returns n bytes of printable ASCII (text) or of every byte value (binary).
func decPayload(n int, text bool) string {
	b := make([]byte, n)
	for i := range b {
		if text {
			b[i] = 'a' + byte(i%26)
		} else {
			b[i] = byte(i % 251)
		}
	}
	return string(b)
}

// decBoundaryCases are the length-encoding boundaries, single frame and fragmented around a ping.
func decBoundaryCases() []decCase {
	var cases []decCase
	cfg := decConfig{maxMessage: 1 << 17}
	for _, n := range []int{0, 1, 125, 126, 127, 65535, 65536} {
		for _, text := range []bool{true, false} {
			op, kind := byte(decOpBinary), "binary"
			if text {
				op, kind = decOpText, "text"
			}
			p := decPayload(n, text)
			want := decMsg(text, false, p)
			cases = append(cases, decCase{
				name:  fmt.Sprintf("%s/len=%d", kind, n),
				cfg:   cfg,
				input: decFrame(decFin|op, p),
				want:  []decEvent{want},
			})
			a, b := n/3, 2*n/3
			cases = append(cases, decCase{
				name: fmt.Sprintf("%s/len=%d/fragmented", kind, n),
				cfg:  cfg,
				input: decCat(decFrame(op, p[:a]), decFrame(decFin|decOpPing, "p"),
					decFrame(decOpContinuation, p[a:b]), decFrame(decFin|decOpContinuation, p[b:])),
				want: []decEvent{decPing("p"), want},
			})
		}
	}
	return cases
}

// TestDecoderLengthBoundaries checks every length encoding edge, text and binary, whole and
// fragmented, under every chunking.
func TestDecoderLengthBoundaries(t *testing.T) {
	decRunCases(t, decBoundaryCases())
}

// decValidCases are well-formed streams beyond the length boundaries.
func decValidCases() []decCase {
	euro := "\xe2\x82\xac" // U+20AC, three bytes
	return []decCase{
		{name: "TextHello", input: decFrame(decFin|decOpText, "hello"), want: []decEvent{decText("hello")}},
		{name: "EmptyTextDelivered", input: decFrame(decFin|decOpText, ""), want: []decEvent{decText("")}},
		{name: "EmptyBinaryDelivered", input: decFrame(decFin|decOpBinary, ""), want: []decEvent{decBinary("")}},
		{name: "EmptyFragmentsDelivered",
			input: decCat(decFrame(decOpText, ""), decFrame(decOpContinuation, ""), decFrame(decFin|decOpContinuation, "")),
			want:  []decEvent{decText("")}},
		{name: "PingPongPayloads",
			input: decCat(decFrame(decFin|decOpPing, ""), decFrame(decFin|decOpPing, decPayload(125, false)), decFrame(decFin|decOpPong, "x")),
			want:  []decEvent{decPing(""), decPing(decPayload(125, false)), decPong("x")}},
		{name: "ControlFramesBetweenFragments",
			input: decCat(decFrame(decOpBinary, "ab"), decFrame(decFin|decOpPing, "1"), decFrame(decOpContinuation, "cd"),
				decFrame(decFin|decOpPong, "2"), decFrame(decFin|decOpPing, "3"), decFrame(decFin|decOpContinuation, "ef"),
				decFrame(decFin|decOpText, "next")),
			want: []decEvent{decPing("1"), decPong("2"), decPing("3"), decBinary("abcdef"), decText("next")}},
		{name: "CodePointSplitAcrossFragments",
			input: decCat(decFrame(decOpText, "a"+euro[:1]), decFrame(decOpContinuation, euro[1:2]),
				decFrame(decFin|decOpContinuation, euro[2:]+"b")),
			want: []decEvent{decText("a" + euro + "b")}},
		{name: "FourByteCodePointSplitAcrossFragments",
			input: decCat(decFrame(decOpText, "\xf0\x9f"), decFrame(decFin|decOpContinuation, "\x98\x80")),
			want:  []decEvent{decText("\U0001F600")}},
		{name: "MultibyteTextWhole", input: decFrame(decFin|decOpText, "héllo wörld "+euro), want: []decEvent{decText("héllo wörld " + euro)}},
		{name: "CloseEmptyIsNoStatus", input: decFrame(decFin|decOpClose, ""), want: []decEvent{decCloseEvent(CloseNoStatus, "")}},
		{name: "CloseNormalBye", input: decCloseFrame(CloseNormal, "bye"), want: []decEvent{decCloseEvent(CloseNormal, "bye")}},
		{name: "CloseCodeOnly", input: decCloseFrame(CloseGoingAway, ""), want: []decEvent{decCloseEvent(CloseGoingAway, "")}},
		{name: "CloseLongReason", input: decCloseFrame(4999, decPayload(123, true)), want: []decEvent{decCloseEvent(4999, decPayload(123, true))}},
		{name: "CloseStopsDecoding",
			input: decCat(decFrame(decFin|decOpText, "a"), decCloseFrame(CloseNormal, ""), decFrame(decFin|decOpText, "ignored"), []byte{0xff, 0xff}),
			want:  []decEvent{decText("a"), decCloseEvent(CloseNormal, "")}},
		{name: "CloseInsideFragmentedMessage",
			input: decCat(decFrame(decOpText, "part"), decCloseFrame(CloseGoingAway, "")),
			want:  []decEvent{decCloseEvent(CloseGoingAway, "")}},
		{name: "CompressedTextSkipsUTF8Check", cfg: decConfig{allowRSV1: true},
			input: decFrame(decFin|decRSV1|decOpText, "\xff\xfe"), want: []decEvent{decMsg(true, true, "\xff\xfe")}},
		{name: "CompressedFragmentedMessage", cfg: decConfig{allowRSV1: true},
			input: decCat(decFrame(decRSV1|decOpBinary, "\x01"), decFrame(decFin|decOpPing, ""), decFrame(decFin|decOpContinuation, "\x02"),
				decFrame(decFin|decOpText, "plain")),
			want: []decEvent{decPing(""), decMsg(false, true, "\x01\x02"), decText("plain")}},
		{name: "MessageExactlyAtLimit", cfg: decConfig{maxMessage: 10},
			input: decCat(decFrame(decOpText, "12345"), decFrame(decFin|decOpContinuation, "67890"), decFrame(decFin|decOpBinary, "0123456789")),
			want:  []decEvent{decText("1234567890"), decBinary("0123456789")}},
		{name: "DefaultLimitIs65536",
			input: decFrame(decFin|decOpBinary, decPayload(65536, false)), want: []decEvent{decBinary(decPayload(65536, false))}},
		{name: "NonMinimalLengthAccepted",
			input: decCat(decHeader(decFin|decOpBinary, 3, []byte{0, 0, 0, 0}, true), []byte("abc")), want: []decEvent{decBinary("abc")}},
	}
}

// TestDecoderValidStreams checks well-formed streams, including empty messages, control frames
// between fragments, code points split across fragments and close handling.
func TestDecoderValidStreams(t *testing.T) {
	decRunCases(t, decValidCases())
}

// TestDecoderConcatenatedFrames feeds all valid streams back to back as one stream: every frame
// boundary then falls at an arbitrary offset of a read.
func TestDecoderConcatenatedFrames(t *testing.T) {
	var input [][]byte
	var want []decEvent
	for _, c := range append(decBoundaryCases(), decValidCases()...) {
		if c.cfg.allowRSV1 || (c.cfg.maxMessage != 0 && c.cfg.maxMessage < 1<<17) || slices.ContainsFunc(c.want, func(e decEvent) bool { return e.kind == "close" }) {
			continue
		}
		input = append(input, c.input)
		want = append(want, c.want...)
	}
	input = append(input, decCloseFrame(CloseNormal, "bye"))
	want = append(want, decCloseEvent(CloseNormal, "bye"))
	all := decCat(input...)
	cfg := decConfig{maxMessage: 1 << 17}
	for _, chunks := range [][][]byte{{bytes.Clone(all)}, decFixedChunks(bytes.Clone(all), 1), decFixedChunks(bytes.Clone(all), 7), decFixedChunks(bytes.Clone(all), 1500)} {
		got := decRun(t, cfg, chunks)
		if got.code != 0 || !slices.Equal(got.events, want) {
			t.Fatalf("chunks of %d: got code %d and %d events, want 0 and %d", len(chunks[0]), got.code, len(got.events), len(want))
		}
	}
}

// decFixedChunks cuts b into chunks of n bytes, like reads of a fixed size.
func decFixedChunks(b []byte, n int) [][]byte {
	var chunks [][]byte
	for len(b) > n {
		chunks = append(chunks, b[:n])
		b = b[n:]
	}
	return append(chunks, b)
}

// TestDecoderUnmaskedFrameFails1002 checks that a client frame without a mask fails, data and control.
func TestDecoderUnmaskedFrameFails1002(t *testing.T) {
	decRunCases(t, []decCase{
		{name: "Text", input: decUnmasked(decFin|decOpText, "hello"), code: CloseProtocolError},
		{name: "Ping", input: decUnmasked(decFin|decOpPing, ""), code: CloseProtocolError},
		{name: "AfterValidFrame", input: decCat(decFrame(decFin|decOpText, "ok"), decUnmasked(decFin|decOpBinary, "x")),
			want: []decEvent{decText("ok")}, code: CloseProtocolError},
	})
}

// TestDecoderReservedBitsFail1002 checks RSV1-3, including RSV1 where compression does not allow it.
func TestDecoderReservedBitsFail1002(t *testing.T) {
	deflate := decConfig{allowRSV1: true}
	decRunCases(t, []decCase{
		{name: "RSV2", input: decFrame(decFin|decRSV2|decOpText, "a"), code: CloseProtocolError},
		{name: "RSV3", input: decFrame(decFin|decRSV3|decOpText, "a"), code: CloseProtocolError},
		{name: "RSV2WithDeflate", cfg: deflate, input: decFrame(decFin|decRSV2|decOpBinary, "a"), code: CloseProtocolError},
		{name: "RSV1WithoutDeflate", input: decFrame(decFin|decRSV1|decOpText, "a"), code: CloseProtocolError},
		{name: "RSV1OnPing", cfg: deflate, input: decFrame(decFin|decRSV1|decOpPing, ""), code: CloseProtocolError},
		{name: "RSV1OnClose", cfg: deflate, input: decFrame(decFin|decRSV1|decOpClose, ""), code: CloseProtocolError},
		{name: "RSV1OnContinuation", cfg: deflate,
			input: decCat(decFrame(decRSV1|decOpText, "a"), decFrame(decFin|decRSV1|decOpContinuation, "b")), code: CloseProtocolError},
	})
}

// TestDecoderReservedOpcodesFail1002 checks every opcode RFC 6455 reserves.
func TestDecoderReservedOpcodesFail1002(t *testing.T) {
	var cases []decCase
	for _, op := range []byte{3, 4, 5, 6, 7, 0xb, 0xc, 0xd, 0xe, 0xf} {
		cases = append(cases, decCase{name: fmt.Sprintf("op=%d", op), input: decFrame(decFin|op, ""), code: CloseProtocolError})
	}
	decRunCases(t, cases)
}

// TestDecoderControlFrameViolationsFail1002 checks oversized and fragmented control frames.
func TestDecoderControlFrameViolationsFail1002(t *testing.T) {
	decRunCases(t, []decCase{
		{name: "Ping126", input: decFrame(decFin|decOpPing, decPayload(126, false)), code: CloseProtocolError},
		{name: "Pong126", input: decFrame(decFin|decOpPong, decPayload(126, false)), code: CloseProtocolError},
		{name: "Close126", input: decCloseFrame(CloseNormal, decPayload(124, true)), code: CloseProtocolError},
		{name: "PingHugeLength", input: decHeader(decFin|decOpPing, 1<<40, []byte{1, 2, 3, 4}, false), code: CloseProtocolError},
		{name: "PingExtendedLengthForm", input: decCat(decHeader(decFin|decOpPing, 5, []byte{0, 0, 0, 0}, true), []byte("hello")), code: CloseProtocolError},
		{name: "PingWithoutFin", input: decFrame(decOpPing, ""), code: CloseProtocolError},
		{name: "CloseWithoutFin", input: decFrame(decOpClose, ""), code: CloseProtocolError},
		{name: "PongWithoutFinBetweenFragments", input: decCat(decFrame(decOpText, "a"), decFrame(decOpPong, "")), code: CloseProtocolError},
	})
}

// TestDecoderBadFragmentationFails1002 checks continuations with no message open and data frames
// that start a message while another is open.
func TestDecoderBadFragmentationFails1002(t *testing.T) {
	decRunCases(t, []decCase{
		{name: "ContinuationFinNoMessage", input: decFrame(decFin|decOpContinuation, "a"), code: CloseProtocolError},
		{name: "ContinuationNoFinNoMessage", input: decFrame(decOpContinuation, "a"), code: CloseProtocolError},
		{name: "ContinuationAfterCompleteMessage",
			input: decCat(decFrame(decFin|decOpText, "a"), decFrame(decFin|decOpContinuation, "b")),
			want:  []decEvent{decText("a")}, code: CloseProtocolError},
		{name: "TextInsideFragmentedMessage",
			input: decCat(decFrame(decOpText, "a"), decFrame(decFin|decOpText, "b")), code: CloseProtocolError},
		{name: "BinaryInsideFragmentedMessage",
			input: decCat(decFrame(decOpBinary, "a"), decFrame(decFin|decOpPing, ""), decFrame(decOpBinary, "b")),
			want:  []decEvent{decPing("")}, code: CloseProtocolError},
	})
}

// TestDecoderLength64TopBitFails1002 checks that a 64-bit length with the most significant bit
// set is refused before the size limit is considered.
func TestDecoderLength64TopBitFails1002(t *testing.T) {
	decRunCases(t, []decCase{
		{name: "TopBitOnly", input: decHeader(decFin|decOpBinary, 1<<63, []byte{1, 2, 3, 4}, false), code: CloseProtocolError},
		{name: "AllOnes", input: decHeader(decFin|decOpText, ^uint64(0), []byte{1, 2, 3, 4}, false), code: CloseProtocolError},
	})
}

// TestDecoderOversizedMessageFails1009 checks the limit on a frame and on the sum of fragments,
// decided from the header before the payload arrives.
func TestDecoderOversizedMessageFails1009(t *testing.T) {
	decRunCases(t, []decCase{
		{name: "SingleFrameOverLimit", cfg: decConfig{maxMessage: 10}, input: decFrame(decFin|decOpText, "12345678901"), code: CloseTooBig},
		{name: "OverDefaultLimit", input: decHeader(decFin|decOpBinary, 65537, []byte{1, 2, 3, 4}, false), code: CloseTooBig},
		{name: "FragmentsOverLimit", cfg: decConfig{maxMessage: 10},
			input: decCat(decFrame(decOpText, "123456"), decFrame(decFin|decOpPing, ""), decFrame(decFin|decOpContinuation, "78901")),
			want:  []decEvent{decPing("")}, code: CloseTooBig},
		{name: "HeaderOnly2To62", input: decHeader(decFin|decOpBinary, 1<<62, []byte{1, 2, 3, 4}, false), code: CloseTooBig},
		{name: "HeaderOnlyContinuation2To62",
			input: decCat(decFrame(decOpBinary, "a"), decHeader(decOpContinuation, 1<<62, []byte{1, 2, 3, 4}, false)), code: CloseTooBig},
	})
}

// TestDecoderHugeLengthDoesNotAllocate checks that a header announcing 2^62 bytes is refused
// without buffering: the only allocation is the error itself.
func TestDecoderHugeLengthDoesNotAllocate(t *testing.T) {
	hdr := decHeader(decFin|decOpBinary, 1<<62, []byte{1, 2, 3, 4}, false)
	var r decRecorder
	var d decoder
	allocs := testing.AllocsPerRun(100, func() {
		d = decoder{}
		if err := d.feed(hdr, &r); err == nil {
			t.Fatal("no error")
		}
	})
	if allocs > 1 {
		t.Fatalf("refusing a 2^62-byte header cost %v allocations, want at most 1 (the error)", allocs)
	}
}

// TestDecoderInvalidUTF8Fails1007 checks text validation: whole messages, fragments that cannot
// become valid (failing before the message ends), and code points cut off at the end.
func TestDecoderInvalidUTF8Fails1007(t *testing.T) {
	cases := []decCase{
		{name: "InvalidByte", input: decFrame(decFin|decOpText, "ab\xffcd"), code: CloseInvalidPayload},
		{name: "Overlong", input: decFrame(decFin|decOpText, "\xc0\xaf"), code: CloseInvalidPayload},
		{name: "Surrogate", input: decFrame(decFin|decOpText, "\xed\xa0\x80"), code: CloseInvalidPayload},
		{name: "AboveMaxRune", input: decFrame(decFin|decOpText, "\xf4\x90\x80\x80"), code: CloseInvalidPayload},
		{name: "TruncatedAtEnd", input: decFrame(decFin|decOpText, "ok\xe2\x82"), code: CloseInvalidPayload},
		{name: "FragmentsEndMidCodePoint",
			input: decCat(decFrame(decOpText, "ok"), decFrame(decFin|decOpContinuation, "\xe2\x82")), code: CloseInvalidPayload},
		{name: "BadContinuationAcrossFragments",
			input: decCat(decFrame(decOpText, "\xe2"), decFrame(decFin|decOpContinuation, "\x28\xa1")), code: CloseInvalidPayload},
		// The first fragment alone is enough to fail: no final fragment follows.
		{name: "FailFastInvalidFirstFragment", input: decFrame(decOpText, "a\xff"), code: CloseInvalidPayload},
		{name: "FailFastSurrogatePrefix", input: decFrame(decOpText, "a\xed\xa0"), code: CloseInvalidPayload},
		{name: "FailFastOverlongPrefix", input: decFrame(decOpText, "\xf0\x80"), code: CloseInvalidPayload},
		{name: "FailFastAboveMaxRunePrefix", input: decFrame(decOpText, "\xf4\x90"), code: CloseInvalidPayload},
		{name: "FailFastBadLead", input: decFrame(decOpText, "\xf5"), code: CloseInvalidPayload},
		{name: "FailFastSecondFragment",
			input: decCat(decFrame(decOpText, "ok"), decFrame(decFin|decOpPing, ""), decFrame(decOpContinuation, "\x80")),
			want:  []decEvent{decPing("")}, code: CloseInvalidPayload},
		{name: "CloseReason", input: decCloseFrame(CloseNormal, "\xff"), code: CloseInvalidPayload},
	}
	decRunCases(t, cases)
}

// TestDecoderCloseCodes checks which close codes a peer may send and the 1-byte close payload.
func TestDecoderCloseCodes(t *testing.T) {
	var cases []decCase
	for _, code := range []int{0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535} {
		cases = append(cases, decCase{name: fmt.Sprintf("Invalid%dFails1002", code), input: decCloseFrame(code, ""), code: CloseProtocolError})
	}
	for _, code := range []int{1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999} {
		cases = append(cases, decCase{name: fmt.Sprintf("Valid%d", code), input: decCloseFrame(code, "r"), want: []decEvent{decCloseEvent(code, "r")}})
	}
	cases = append(cases, decCase{name: "OneBytePayloadFails1002", input: decFrame(decFin|decOpClose, "\x03"), code: CloseProtocolError})
	decRunCases(t, cases)
}

// TestDecoderUnmasksInPlace checks that a frame wholly inside one read is handed over as a slice
// of that read, unmasked, without a copy.
func TestDecoderUnmasksInPlace(t *testing.T) {
	frame := decFrame(decFin|decOpBinary, "payload bytes")
	h := &decAliasCheck{data: frame}
	var d decoder
	defer d.release()
	if err := d.feed(frame, h); err != nil {
		t.Fatal(err)
	}
	if !h.aliased || string(frame[len(frame)-13:]) != "payload bytes" {
		t.Fatalf("payload not unmasked in place in the caller's buffer (aliased=%v)", h.aliased)
	}
}

// decAliasCheck is a frameHandler that reports whether a message payload lies inside data.
type decAliasCheck struct {
	data    []byte
	aliased bool
}

func (a *decAliasCheck) onMessage(_, _ bool, p []byte) {
	a.aliased = len(p) > 0 && &p[len(p)-1] == &a.data[len(a.data)-1]
}
func (a *decAliasCheck) onPing([]byte)       {}
func (a *decAliasCheck) onPong([]byte)       {}
func (a *decAliasCheck) onClose(int, []byte) {}

// TestDecoderBuffersOnlyWhileNeeded checks that buffers are taken for a partial frame or an open
// fragmented message and given back once it completes, so an idle connection holds none.
func TestDecoderBuffersOnlyWhileNeeded(t *testing.T) {
	var d decoder
	defer d.release()
	var r decRecorder
	feed := func(b []byte) {
		t.Helper()
		if err := d.feed(b, &r); err != nil {
			t.Fatal(err)
		}
	}
	frame := decFrame(decFin|decOpText, "hello world")
	feed(frame[:9])
	if d.msg == nil {
		t.Fatal("no buffer for a partial payload")
	}
	feed(frame[9:])
	if d.msg != nil || d.ctl != nil {
		t.Fatal("buffer kept after the message completed")
	}
	ping := decFrame(decFin|decOpPing, "ping!")
	feed(ping[:8])
	if d.ctl == nil {
		t.Fatal("no buffer for a partial control payload")
	}
	feed(ping[8:])
	if d.ctl != nil {
		t.Fatal("control buffer kept after the ping")
	}
	feed(decFrame(decOpBinary, "frag"))
	if d.msg == nil {
		t.Fatal("no reassembly buffer for an open fragmented message")
	}
	feed(decFrame(decFin|decOpContinuation, "ment"))
	if d.msg != nil {
		t.Fatal("reassembly buffer kept after the message completed")
	}
	want := []decEvent{decText("hello world"), decPing("ping!"), decBinary("fragment")}
	if !slices.Equal(r.events, want) {
		t.Fatalf("got %v, want %v", r.events, want)
	}
}

// TestDecoderReleaseAllowsReuse checks that release drops partial state and buffers but keeps
// the configuration.
func TestDecoderReleaseAllowsReuse(t *testing.T) {
	d := decoder{maxMessage: 5, allowRSV1: true}
	var r decRecorder
	if err := d.feed(decFrame(decOpText, "abc"), &r); err != nil {
		t.Fatal(err)
	}
	d.release()
	if d.msg != nil || d.ctl != nil || d.msgOpen || d.maxMessage != 5 || !d.allowRSV1 {
		t.Fatalf("release left %+v", d)
	}
	if err := d.feed(decFrame(decFin|decRSV1|decOpText, "hi"), &r); err != nil {
		t.Fatal(err)
	}
	err := d.feed(decFrame(decFin|decOpText, "too long"), &r)
	var pe *ProtocolError
	if !errors.As(err, &pe) || pe.Code != CloseTooBig {
		t.Fatalf("got %v, want the kept limit to give 1009", err)
	}
	d.release()
	if err := d.feed(decFrame(decFin|decOpText, "again"), &r); err != nil {
		t.Fatalf("decoder not reusable after a failure and release: %v", err)
	}
	want := []decEvent{decMsg(true, true, "hi"), decText("again")}
	if !slices.Equal(r.events, want) {
		t.Fatalf("got %v, want %v", r.events, want)
	}
}

// TestDecoderIgnoresFeedAfterClose checks that a later feed after onClose returns nil silently.
func TestDecoderIgnoresFeedAfterClose(t *testing.T) {
	var d decoder
	defer d.release()
	var r decRecorder
	if err := d.feed(decCloseFrame(CloseNormal, ""), &r); err != nil {
		t.Fatal(err)
	}
	if err := d.feed([]byte{0xff, 0xff, 0xff}, &r); err != nil || len(r.events) != 1 {
		t.Fatalf("feed after close returned %v with %d events, want nil and 1", err, len(r.events))
	}
}

// TestXorMaskMatchesBytewise checks the word-at-a-time mask against the byte loop for every
// length and starting key offset.
func TestXorMaskMatchesBytewise(t *testing.T) {
	key := [4]byte{0x11, 0x22, 0x44, 0x88}
	for n := range 40 {
		for pos := range 4 {
			b := []byte(decPayload(n, false))
			want := bytes.Clone(b)
			for i := range want {
				want[i] ^= key[(pos+i)%4]
			}
			if next := xorMask(key, pos, b); next != (pos+n)%4 || !bytes.Equal(b, want) {
				t.Fatalf("n=%d pos=%d: got %x next %d, want %x next %d", n, pos, b, next, want, (pos+n)%4)
			}
		}
	}
}

// TestUTF8StreamMatchesStdlib checks the incremental validator against utf8.Valid for strings
// cut at every point, including the tricky boundaries of RFC 3629.
func TestUTF8StreamMatchesStdlib(t *testing.T) {
	inputs := []string{"", "a", "héllo", "\xe2\x82\xac", "\U0001F600", "\U0010FFFF", "\xed\x9f\xbf", "\xee\x80\x80",
		"\xc0\x80", "\xc1\xbf", "\xc2\x80", "\xe0\x9f\xbf", "\xe0\xa0\x80", "\xed\xa0\x80", "\xf0\x8f\xbf\xbf",
		"\xf0\x90\x80\x80", "\xf4\x8f\xbf\xbf", "\xf4\x90\x80\x80", "\xf5\x80\x80\x80", "\xff", "\x80", "a\xe2\x82",
		"\xe2\x82\xac\xe2", "ab\xf0\x9f\x98\x80cd", "\xe2\x28\xa1", "\xf0\x9f\x98"}
	for _, s := range inputs {
		for i := 0; i <= len(s); i++ {
			for j := i; j <= len(s); j++ {
				var st utf8Stream
				ok := st.write([]byte(s[:i])) && st.write([]byte(s[i:j])) && st.write([]byte(s[j:])) && st.n == 0
				if ok != utf8.ValidString(s) {
					t.Fatalf("%q cut at %d,%d: stream says %v, utf8.ValidString says %v", s, i, j, ok, !ok)
				}
			}
		}
	}
}

// TestUTF8StreamRandomCuts compares the validator with utf8.Valid on random strings of bytes
// that matter to UTF-8, cut into random pieces.
func TestUTF8StreamRandomCuts(t *testing.T) {
	alphabet := []byte{'a', 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xc2, 0xdf, 0xe0, 0xe1, 0xed, 0xef, 0xf0, 0xf3, 0xf4, 0xf5, 0xff}
	r := rand.New(rand.NewPCG(1, 2))
	for range 200000 {
		b := make([]byte, r.IntN(10))
		for i := range b {
			b[i] = alphabet[r.IntN(len(alphabet))]
		}
		var st utf8Stream
		ok, rest := true, b
		for len(rest) > 0 && ok {
			n := 1 + r.IntN(len(rest))
			ok = st.write(rest[:n])
			rest = rest[n:]
		}
		if got := ok && st.n == 0; got != utf8.Valid(b) {
			t.Fatalf("%q: stream says %v, utf8.Valid says %v", b, got, !got)
		}
	}
}

// decCounter is a frameHandler that only counts, so alloc checks measure the decoder alone.
type decCounter struct{ messages, pings int }

func (c *decCounter) onMessage(bool, bool, []byte) { c.messages++ }
func (c *decCounter) onPing([]byte)                { c.pings++ }
func (c *decCounter) onPong([]byte)                {}
func (c *decCounter) onClose(int, []byte)          {}

// TestDecoderNoAllocsSteadyState pins the hot paths at zero allocations once the pool is warm.
func TestDecoderNoAllocsSteadyState(t *testing.T) {
	text := decPayload(100, true)
	fragmented := decCat(decFrame(decOpText, text[:30]), decFrame(decOpContinuation, text[30:60]),
		decFrame(decFin|decOpPing, "hb"), decFrame(decFin|decOpContinuation, text[60:]))
	cases := []struct {
		name     string
		input    []byte
		messages int
	}{
		{"OneFrame", decFrame(decFin|decOpText, text), 1},
		{"TenFramesOneRead", bytes.Repeat(decFrame(decFin|decOpText, text), 10), 10},
		{"ThreeFragmentsWithPing", fragmented, 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var d decoder
			defer d.release()
			var h decCounter
			work := make([]byte, len(c.input))
			run := func() {
				copy(work, c.input) // a fresh read: feed unmasks in place
				if err := d.feed(work, &h); err != nil {
					t.Fatal(err)
				}
			}
			for range 10 {
				run()
			}
			h = decCounter{}
			if allocs := testing.AllocsPerRun(1000, run); allocs != 0 {
				t.Fatalf("got %v allocations per feed, want 0", allocs)
			}
			if h.messages != 1001*c.messages {
				t.Fatalf("got %d messages, want %d", h.messages, 1001*c.messages)
			}
		})
	}
}

// BenchmarkDecoder measures one complete masked text frame per feed, the common case of a chat
// message arriving in one read. The mask key is zero, which RFC 6455 permits: the XOR work is the
// same as for any key, but the buffer stays unchanged so it can be fed again without a copy.
func BenchmarkDecoder(b *testing.B) {
	for _, size := range []int{16, 128, 1024, 4096} {
		b.Run(fmt.Sprintf("size=%d", size), func(b *testing.B) {
			frame := decFrameKey(decFin|decOpText, decPayload(size, true), [4]byte{})
			var d decoder
			defer d.release()
			var h decCounter
			b.ReportAllocs()
			b.SetBytes(int64(len(frame)))
			for b.Loop() {
				if err := d.feed(frame, &h); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
