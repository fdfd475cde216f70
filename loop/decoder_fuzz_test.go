package loop

import (
	"bytes"
	"hash/fnv"
	"slices"
	"testing"
	"unicode/utf8"
)

// FuzzDecoder feeds each input whole, one byte at a time and split in two at a point derived from
// the input. All three must produce the same callbacks and the same error code, the decoder must
// never panic, and what it delivers must respect the protocol (valid UTF-8 text, valid close codes,
// control payloads of at most 125 bytes). Each input runs under two configurations so that the
// size limit and permessage-deflate paths are reached too.
func FuzzDecoder(f *testing.F) {
	// Fixed mask keys (the one from RFC 6455 section 5.7) keep the seed corpus stable across runs.
	key := [4]byte{0x37, 0xfa, 0x21, 0x3d}
	f.Add(decFrameKey(decFin|decOpText, "hello", key))
	f.Add(decCat(decFrameKey(decOpText, "hel", key), decFrameKey(decFin|decOpPing, "hb", key),
		decFrameKey(decFin|decOpContinuation, "lo", key)))
	f.Add(decFrameKey(decFin|decOpClose, "\x03\xe8bye", key))
	f.Add(decFrameKey(decFin|decOpBinary, decPayload(126, false), key))
	f.Add(decCat(decFrameKey(decRSV1|decOpText, "\xe2\x82", key), decFrameKey(decFin|decOpContinuation, "\xac", key)))
	f.Add(decHeader(decFin|decOpBinary, 1<<62, key[:], false))
	configs := []decConfig{{}, {maxMessage: 200, allowRSV1: true}}
	f.Fuzz(func(t *testing.T, input []byte) {
		h := fnv.New32a()
		h.Write(input)
		split := int(h.Sum32() % uint32(len(input)+1))
		for _, cfg := range configs {
			whole := decRun(t, cfg, [][]byte{bytes.Clone(input)})
			one := decRun(t, cfg, decFixedChunks(bytes.Clone(input), 1))
			buf := bytes.Clone(input)
			two := decRun(t, cfg, [][]byte{buf[:split], buf[split:]})
			for name, got := range map[string]decResult{"bytewise": one, "split": two} {
				if got.code != whole.code || !slices.Equal(got.events, whole.events) {
					t.Fatalf("cfg %+v: %s gives code %d events %v; whole gives code %d events %v",
						cfg, name, got.code, got.events, whole.code, whole.events)
				}
			}
			decCheckDelivered(t, whole)
		}
	})
}

// decCheckDelivered checks what a decoder delivered against the guarantees in frameHandler.
func decCheckDelivered(t *testing.T, r decResult) {
	t.Helper()
	for i, e := range r.events {
		switch e.kind {
		case "msg":
			if e.text && !e.compressed && !utf8.ValidString(e.payload) {
				t.Fatalf("event %d: text message with invalid UTF-8 delivered", i)
			}
		case "ping", "pong":
			if len(e.payload) > 125 {
				t.Fatalf("event %d: control payload of %d bytes delivered", i, len(e.payload))
			}
		case "close":
			if i != len(r.events)-1 || r.code != 0 {
				t.Fatalf("event %d: decoding went on after onClose", i)
			}
			if e.code != CloseNoStatus && !validCloseCode(e.code) || !utf8.ValidString(e.payload) {
				t.Fatalf("event %d: invalid close %d %q delivered", i, e.code, e.payload)
			}
		}
	}
}
