package loop

import (
	"bytes"
	"compress/flate"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"nbchat/protocol"
)

func deflateOffer() http.Header {
	return http.Header{"Sec-WebSocket-Extensions": {"permessage-deflate; client_max_window_bits"}}
}

// compressClient deflates a payload as a client would, tail stripped.
func compressClient(t *testing.T, p []byte) []byte {
	var b bytes.Buffer
	w, _ := flate.NewWriter(&b, flate.BestSpeed)
	_, _ = w.Write(p)
	_ = w.Flush()
	out := b.Bytes()
	if !bytes.HasSuffix(out, []byte{0, 0, 0xff, 0xff}) {
		t.Fatal("no sync flush tail")
	}
	return out[:len(out)-4]
}

// readText reads the next text frame, inflating it when RSV1 is set.
func readText(t *testing.T, c *testClient) (map[string]any, bool) {
	t.Helper()
	for {
		_ = c.conn.SetReadDeadline(time.Now().Add(3 * time.Second))
		b0, err := c.r.Peek(1)
		if err != nil {
			t.Fatal(err)
		}
		rsv1 := b0[0]&0x40 != 0
		_, op, p, err := c.readFrame(3 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if op != 0x1 {
			continue
		}
		if rsv1 {
			if p, err = protocol.Inflate(nil, p, 1<<20); err != nil {
				t.Fatal(err)
			}
		}
		var m map[string]any
		if err := json.Unmarshal(p, &m); err != nil {
			t.Fatalf("%q: %v", p, err)
		}
		return m, rsv1
	}
}

func TestPermessageDeflateSharedBroadcast(t *testing.T) {
	s := startServer(t, Config{Compress: true})
	status, z := handshake(t, s.Addr(), "/ws?name=zed&room=lobby", deflateOffer())
	if status != http.StatusSwitchingProtocols {
		t.Fatalf("status %d", status)
	}
	plain := connect(t, s.Addr(), "plain", "lobby")
	long := strings.Repeat("compress me please ", 20)

	// The compressing client sends a compressed message.
	msg := []byte(`{"type":"msg","room":"lobby","text":"` + long + `"}`)
	f := clientFrame(true, 0x1, compressClient(t, msg), true)
	f[0] |= 0x40
	if _, err := z.conn.Write(f); err != nil {
		t.Fatal(err)
	}
	for {
		m, rsv1 := readText(t, z)
		if m["type"] != "msg" {
			continue
		}
		if !rsv1 || m["text"] != long {
			t.Fatalf("compressing member got rsv1=%v %v", rsv1, m)
		}
		break
	}
	// The member that did not negotiate gets the same message uncompressed.
	for {
		_, op, p, err := plain.readFrame(3 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if op == 0x1 && bytes.Contains(p, []byte(long)) {
			break
		}
	}
}

func TestPermessageDeflateNotNegotiatedUnlessEnabled(t *testing.T) {
	s := startServer(t, Config{})
	status, c := handshake(t, s.Addr(), "/ws?name=zed", deflateOffer())
	if status != http.StatusSwitchingProtocols {
		t.Fatalf("status %d", status)
	}
	// RSV1 without the extension is a protocol error.
	f := clientFrame(true, 0x1, compressClient(t, []byte(`{"type":"ping"}`)), true)
	f[0] |= 0x40
	_, _ = c.conn.Write(f)
	if code := c.expectClose(3 * time.Second); code != CloseProtocolError {
		t.Fatalf("close %d, want 1002", code)
	}
}

func TestOffersDeflate(t *testing.T) {
	for _, tc := range []struct {
		offer string
		want  bool
	}{
		{"permessage-deflate", true},
		{"permessage-deflate; client_max_window_bits", true},
		{"permessage-deflate; server_max_window_bits=10, permessage-deflate", true},
		{"permessage-deflate; server_max_window_bits=10", false},
		{"permessage-deflate; unknown_param", false},
		{"x-webkit-deflate-frame", false},
	} {
		if got := offersDeflate([]string{tc.offer}); got != tc.want {
			t.Errorf("%q: %v, want %v", tc.offer, got, tc.want)
		}
	}
}

func TestDeflateBombClosesWith1009(t *testing.T) {
	s := startServer(t, Config{Compress: true, MaxMessage: 8192})
	status, c := handshake(t, s.Addr(), "/ws?name=bomb", deflateOffer())
	if status != http.StatusSwitchingProtocols {
		t.Fatalf("status %d", status)
	}
	c.expect("welcome")
	f := clientFrame(true, 0x1, compressClient(t, bytes.Repeat([]byte("a"), 1<<20)), true)
	f[0] |= 0x40
	_, _ = c.conn.Write(f)
	if code := c.expectClose(3 * time.Second); code != CloseTooBig {
		t.Fatalf("close %d, want 1009", code)
	}
}
