package protocol_test

import (
	"bytes"
	"compress/flate"
	"fmt"
	"io"
	"strings"
	"testing"

	"nbchat/protocol"
)

func TestDeflatedFrameInflatesToTheOriginal(t *testing.T) {
	text := []byte(strings.Repeat("the quick brown fox jumps over the lazy dog ", 20))
	f := protocol.Msg("lobby", "alice", text, 7, 1)
	defer f.Release()
	z := f.Deflated()
	if z == f {
		t.Fatal("a compressible message was not compressed")
	}
	if z != f.Deflated() {
		t.Fatal("Deflated computed twice")
	}
	b := z.Bytes()
	if b[0] != 0xC1 {
		t.Fatalf("first byte %#x, want FIN|RSV1|text", b[0])
	}
	if len(z.Payload()) >= len(f.Payload()) {
		t.Fatalf("compressed %d bytes from %d", len(z.Payload()), len(f.Payload()))
	}
	// A standard inflater given the stripped tail back reads the original.
	r := flate.NewReader(io.MultiReader(bytes.NewReader(z.Payload()), bytes.NewReader([]byte{0, 0, 0xff, 0xff})))
	got, err := io.ReadAll(r)
	if err != nil && err != io.ErrUnexpectedEOF {
		t.Fatal(err)
	}
	if !bytes.Equal(got, f.Payload()) {
		t.Fatalf("inflated %q", got)
	}
	back, err := protocol.Inflate(nil, z.Payload(), 1<<20)
	if err != nil || !bytes.Equal(back, f.Payload()) {
		t.Fatalf("Inflate = %q, %v", back, err)
	}
}

func TestDeflatedLeavesSmallAndControlFramesAlone(t *testing.T) {
	small := protocol.Pong(nil)
	defer small.Release()
	if small.Deflated() != small {
		t.Fatal("a small frame was compressed")
	}
	c := protocol.Close(1000, strings.Repeat("x", 120))
	defer c.Release()
	if c.Deflated() != c {
		t.Fatal("a control frame was compressed")
	}
}

func TestInflateStopsAtTheLimit(t *testing.T) {
	f := protocol.Msg("r", "a", bytes.Repeat([]byte("a"), 100000), 1, 1)
	defer f.Release()
	z := f.Deflated()
	if _, err := protocol.Inflate(nil, z.Payload(), 4096); err != protocol.ErrInflatedTooLarge {
		t.Fatalf("err %v, want ErrInflatedTooLarge", err)
	}
}

// BenchmarkBroadcastDeflate compares compressing a broadcast once and
// sharing it (what the server does) with compressing it for each
// recipient (what per-connection compression costs).
func BenchmarkBroadcastDeflate(b *testing.B) {
	text := []byte(strings.Repeat("hello room, this is a chat message of some length. ", 10))
	for _, members := range []int{100, 1000} {
		b.Run(fmt.Sprintf("mode=shared,members=%d", members), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				f := protocol.Msg("lobby", "alice", text, 1, 1)
				for range members {
					_ = f.Deflated()
				}
				f.Release()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*members), "ns/recipient")
		})
		b.Run(fmt.Sprintf("mode=perconn,members=%d", members), func(b *testing.B) {
			b.ReportAllocs()
			w, _ := flate.NewWriter(io.Discard, flate.BestSpeed)
			for b.Loop() {
				f := protocol.Msg("lobby", "alice", text, 1, 1)
				for range members {
					w.Reset(io.Discard)
					_, _ = w.Write(f.Payload())
					_ = w.Flush()
				}
				f.Release()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*members), "ns/recipient")
		})
	}
}
