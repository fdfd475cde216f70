package protocol_test

import (
	"strconv"
	"strings"
	"testing"

	"nbchat/protocol"
)

var benchSizes = []int{16, 256, 4096}

// benchText is n bytes of chat-like text with a few characters that need
// escaping, as JSON source when escaped is set.
func benchText(n int, escaped bool) string {
	unit := `hello "world" é `
	if escaped {
		unit = `hello \"world\" \u00e9 `
	}
	s := strings.Repeat(unit, n/len(unit))
	return s + strings.Repeat("x", n-len(s))
}

// BenchmarkDecode decodes a msg request whose text is size bytes of JSON
// source. The timer includes copying the request into the reused buffer
// (Decode unescapes in place) and Decode itself, validation included.
func BenchmarkDecode(b *testing.B) {
	for _, size := range benchSizes {
		b.Run("type=msg,size="+strconv.Itoa(size), func(b *testing.B) {
			text := benchText(size, true)
			in := []byte(`{"type":"msg","room":"lobby","text":"` + text + `","id":"c-1"}`)
			buf := make([]byte, len(in))
			var r protocol.Request
			b.ReportAllocs()
			b.SetBytes(int64(len(in)))
			for b.Loop() {
				copy(buf, in)
				if err := r.Decode(buf, protocol.DefaultMaxText); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkEncode encodes a room message whose text is size bytes. The timer
// includes taking a frame from the pool, escaping and writing the payload,
// writing the header, and the Release that puts the frame back.
func BenchmarkEncode(b *testing.B) {
	for _, size := range benchSizes {
		b.Run("kind=msg,size="+strconv.Itoa(size), func(b *testing.B) {
			text := []byte(benchText(size, false))
			f := protocol.Msg("lobby", "alice", text, 1, 1763770000123)
			b.SetBytes(int64(len(f.Bytes())))
			f.Release()
			b.ReportAllocs()
			var seq uint64
			for b.Loop() {
				seq++
				protocol.Msg("lobby", "alice", text, seq, 1763770000123).Release()
			}
		})
	}
}
