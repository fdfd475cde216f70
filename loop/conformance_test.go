package loop

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"
	"time"
)

// closeFrame builds a masked client close frame payload with code and reason.
func closePayload(code int, reason string) []byte {
	return append(binary.BigEndian.AppendUint16(nil, uint16(code)), reason...)
}

// TestConformanceViolationsClose sends each RFC 6455 violation over raw
// TCP and checks the server answers with a close frame carrying the right
// code and then closes the socket.
func TestConformanceViolationsClose(t *testing.T) {
	s := startServer(t, Config{MaxMessage: 1024, MaxText: 512})
	cases := []struct {
		name  string
		bytes []byte
		want  int
	}{
		{"unmasked frame", clientFrame(true, 0x1, []byte(`{"type":"ping"}`), false), CloseProtocolError},
		{"RSV1 without extension", func() []byte { b := clientFrame(true, 0x1, []byte("x"), true); b[0] |= 0x40; return b }(), CloseProtocolError},
		{"RSV2", func() []byte { b := clientFrame(true, 0x1, []byte("x"), true); b[0] |= 0x20; return b }(), CloseProtocolError},
		{"reserved opcode 3", clientFrame(true, 0x3, nil, true), CloseProtocolError},
		{"reserved control opcode 11", clientFrame(true, 0xB, nil, true), CloseProtocolError},
		{"control frame over 125 bytes", clientFrame(true, 0x9, bytes.Repeat([]byte("p"), 126), true), CloseProtocolError},
		{"fragmented control frame", clientFrame(false, 0x9, []byte("p"), true), CloseProtocolError},
		{"continuation with nothing to continue", clientFrame(true, 0x0, []byte("x"), true), CloseProtocolError},
		{"unfinished continuation with nothing to continue", clientFrame(false, 0x0, []byte("x"), true), CloseProtocolError},
		{"new data frame inside a fragmented message", append(clientFrame(false, 0x1, []byte("a"), true), clientFrame(true, 0x1, []byte("b"), true)...), CloseProtocolError},
		{"invalid UTF-8 text", clientFrame(true, 0x1, []byte{0xff, 0xfe}, true), CloseInvalidPayload},
		{"invalid UTF-8 across fragments", append(clientFrame(false, 0x1, []byte{0xce}, true), clientFrame(true, 0x0, []byte{0x41}, true)...), CloseInvalidPayload},
		{"invalid UTF-8 close reason", clientFrame(true, 0x8, append(closePayload(1000, ""), 0xff), true), CloseInvalidPayload},
		{"message over the limit", clientFrame(true, 0x1, bytes.Repeat([]byte("x"), 1025), true), CloseTooBig},
		{"fragments over the limit", append(clientFrame(false, 0x1, bytes.Repeat([]byte("x"), 600), true), clientFrame(true, 0x0, bytes.Repeat([]byte("x"), 600), true)...), CloseTooBig},
		{"close code 1005 is not to be sent", clientFrame(true, 0x8, closePayload(1005, ""), true), CloseProtocolError},
		{"close code 1015 is not to be sent", clientFrame(true, 0x8, closePayload(1015, ""), true), CloseProtocolError},
		{"close code 999", clientFrame(true, 0x8, closePayload(999, ""), true), CloseProtocolError},
		{"close code 5000", clientFrame(true, 0x8, closePayload(5000, ""), true), CloseProtocolError},
		{"one-byte close payload", clientFrame(true, 0x8, []byte{0x03}, true), CloseProtocolError},
	}
	for i, tc := range cases {
		for _, mode := range []string{"whole", "byte by byte"} {
			t.Run(tc.name+"/"+mode, func(t *testing.T) {
				c := connect(t, s.Addr(), nameFor(i, mode), "")
				if mode == "whole" {
					_, _ = c.conn.Write(tc.bytes)
				} else {
					for _, b := range tc.bytes {
						if _, err := c.conn.Write([]byte{b}); err != nil {
							break
						}
					}
				}
				if got := c.expectClose(3 * time.Second); got != tc.want {
					t.Fatalf("close code %d, want %d", got, tc.want)
				}
				c.writeFrame(true, 0x8, closePayload(tc.want, ""), true)
				c.expectEOF(3 * time.Second)
			})
		}
	}
}

func nameFor(i int, mode string) string {
	return strings.ReplaceAll(mode, " ", "") + string(rune('a'+i%26)) + string(rune('a'+i/26))
}

func TestConformancePingGetsPongWithSamePayload(t *testing.T) {
	s := startServer(t, Config{})
	c := connect(t, s.Addr(), "pinger", "lobby")
	c.writeFrame(true, 0x9, []byte("are you there"), true)
	expectPong(t, c, "are you there")

	// Between the fragments of a message, and all in one write.
	var b []byte
	b = append(b, clientFrame(false, 0x1, []byte(`{"type":"msg","room":"lobby",`), true)...)
	b = append(b, clientFrame(true, 0x9, []byte("mid"), true)...)
	b = append(b, clientFrame(true, 0x0, []byte(`"text":"joined up"}`), true)...)
	_, _ = c.conn.Write(b)
	expectPong(t, c, "mid")
	if m := c.expect("msg"); m.str("text") != "joined up" {
		t.Fatalf("got %v", m)
	}
}

func expectPong(t *testing.T, c *testClient, payload string) {
	t.Helper()
	for {
		_, op, p, err := c.readFrame(3 * time.Second)
		if err != nil {
			t.Fatalf("waiting for pong: %v", err)
		}
		if op == 0xA {
			if string(p) != payload {
				t.Fatalf("pong payload %q, want %q", p, payload)
			}
			return
		}
	}
}

func TestConformanceCloseIsEchoedThenSocketCloses(t *testing.T) {
	s := startServer(t, Config{})
	for _, tc := range []struct {
		name    string
		payload []byte
		want    int
	}{
		{"with code", closePayload(1000, "bye"), 1000},
		{"private code", closePayload(4001, ""), 4001},
		{"without code", nil, 1000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := connect(t, s.Addr(), "closer"+strings.ReplaceAll(tc.name, " ", ""), "")
			c.writeFrame(true, 0x8, tc.payload, true)
			if got := c.expectClose(3 * time.Second); got != tc.want {
				t.Fatalf("echoed code %d, want %d", got, tc.want)
			}
			c.expectEOF(3 * time.Second)
		})
	}
}

func TestConformanceSeveralFramesInOneWrite(t *testing.T) {
	s := startServer(t, Config{})
	c := connect(t, s.Addr(), "batcher", "lobby")
	var b []byte
	for i := range 20 {
		b = append(b, clientFrame(true, 0x1, []byte(`{"type":"msg","room":"lobby","text":"`+strings.Repeat("x", i+1)+`"}`), true)...)
	}
	_, _ = c.conn.Write(b)
	for i := range 20 {
		if m := c.expect("msg"); len(m.str("text")) != i+1 || m.num("seq") != int64(i+1) {
			t.Fatalf("message %d: got %v", i, m)
		}
	}
	// And a frame split across writes at every point.
	f := clientFrame(true, 0x1, []byte(`{"type":"msg","room":"lobby","text":"split"}`), true)
	for cut := 1; cut < len(f); cut++ {
		_, _ = c.conn.Write(f[:cut])
		time.Sleep(time.Millisecond)
		_, _ = c.conn.Write(f[cut:])
		if m := c.expect("msg"); m.str("text") != "split" {
			t.Fatalf("cut %d: got %v", cut, m)
		}
	}
}

func TestConformanceEmptyTextMessageIsABadRequest(t *testing.T) {
	s := startServer(t, Config{})
	c := connect(t, s.Addr(), "empty", "")
	c.writeFrame(true, 0x1, nil, true)
	if m := c.expect("error"); m.str("code") != "bad_request" {
		t.Fatalf("got %v", m)
	}
}
