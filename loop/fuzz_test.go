package loop

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"
)

// fuzzServer is started once per fuzz process and shared by every input.
var (
	fuzzOnce    sync.Once
	fuzzSrv     *Server
	fuzzErr     error
	fuzzPanics  atomic.Int64 // panics the server recovered and logged
	fuzzClients atomic.Int64
)

// panicCounter counts the server's "panic handling a connection" logs.
type panicCounter struct{ slog.Handler }

func (h panicCounter) Enabled(context.Context, slog.Level) bool { return true }
func (h panicCounter) Handle(_ context.Context, r slog.Record) error {
	if strings.Contains(r.Message, "panic") {
		fuzzPanics.Add(1)
	}
	return nil
}

func fuzzServer(t *testing.T) *Server {
	fuzzOnce.Do(func() {
		// Small limits so the fuzzer reaches them; the rate limit is off so
		// that inputs are handled alike whatever ran before them.
		fuzzSrv, fuzzErr = New(Config{
			Addr: "127.0.0.1:0", MaxMessage: 1024, MaxText: 256, MaxRoomsPerConn: 4,
			RateLimit: 0, RateBurst: -1, Logger: slog.New(panicCounter{slog.DiscardHandler}),
		})
		if fuzzErr == nil {
			fuzzErr = fuzzSrv.Start()
		}
	})
	if fuzzErr != nil {
		t.Fatal(fuzzErr)
	}
	return fuzzSrv
}

// FuzzServerInbound writes bytes to an upgraded connection of a real
// server (raw, then text as one masked text frame, then a sentinel ping)
// and reads every frame the server sends back, until the sentinel's pong,
// the end of the socket, or a pause that means the server waits for the
// rest of a frame. The server must not panic, and every frame must be
// well-formed: unmasked, no reserved bits, a known opcode, control frames
// short and unfragmented, text frames one JSON object, close frames with a
// valid code.
func FuzzServerInbound(f *testing.F) {
	mask := func(op byte, p string) []byte { return clientFrame(true, op, []byte(p), true) }
	f.Add(mask(0x1, `{"type":"join","room":"lobby","id":1}`), "")
	f.Add([]byte{}, `{"type":"join","room":"lobby"}`)
	f.Add(mask(0x1, `{"type":"join","room":"a"}`), `{"type":"msg","room":"a","text":"hi"}`)
	f.Add(mask(0x1, `{"type":"dm","to":"nobody","text":"x"}`), `{"type":"rooms"}`)
	f.Add(mask(0x9, "ping?"), `{"type":"ping","id":"p"}`)
	f.Add(append(clientFrame(false, 0x1, []byte(`{"type":"pi`), true), clientFrame(true, 0x0, []byte(`ng"}`), true)...), "")
	f.Add(mask(0x8, "\x03\xe8bye"), "")
	f.Add(mask(0x8, "\x0f\xa1"), "")
	f.Add(mask(0x1, "\xff\xfe"), "")
	f.Add(clientFrame(true, 0x1, []byte(`{"type":"ping"}`), false), "")
	f.Add(mask(0x2, "\x00\x01"), "")
	f.Add(mask(0x1, strings.Repeat("x", 2000)), "")
	f.Add([]byte{0x81, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, "")
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"), "")
	f.Fuzz(func(t *testing.T, raw []byte, text string) {
		s := fuzzServer(t)
		panicsBefore := fuzzPanics.Load()
		input := raw
		if text != "" {
			input = append(input[:len(input):len(input)], clientFrame(true, 0x1, []byte(text), true)...)
		}
		code, _, err := fuzzExchange(s.Addr(), fmt.Sprintf("fz%d", fuzzClients.Add(1)), input)
		if err != nil {
			t.Fatal(err)
		}
		if code == CloseInternalError && !strings.Contains(string(input), panicText) {
			t.Fatalf("server closed with 1011 (a recovered panic) for input %q", input)
		}
		if n := fuzzPanics.Load() - panicsBefore; n > 0 && !strings.Contains(string(input), panicText) {
			t.Fatalf("server logged %d panics for input %q", n, input)
		}
	})
}

// fuzzExchange connects as name, writes input and a sentinel ping, and
// checks everything the server sends until the sentinel's pong, EOF or a
// pause of fuzzIdle. It returns the close code seen (0 if none) and the
// number of frames.
func fuzzExchange(addr, name string, input []byte) (code, frames int, err error) {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return 0, 0, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write(upgradeRequest(addr, "/ws?name="+name, nil)); err != nil {
		return 0, 0, err
	}
	r := bufio.NewReader(conn)
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		return 0, 0, fmt.Errorf("handshake: %w", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		return 0, 0, fmt.Errorf("handshake: status %d", resp.StatusCode)
	}
	// Read concurrently: a big answer must not block the server while
	// the input is still being written.
	input = append(input[:len(input):len(input)], clientFrame(true, 0x9, []byte(fuzzSentinel), true)...)
	go func() { _, _ = conn.Write(input) }()
	for ; ; frames++ {
		_ = conn.SetReadDeadline(time.Now().Add(fuzzIdle))
		c, err := readServerFrame(r)
		var ne net.Error
		// A frame cut by EOF is a server bug; one cut by a reset is not
		// (the server closed with our sentinel unread).
		if err == io.EOF || errors.Is(err, syscall.ECONNRESET) || errors.As(err, &ne) && ne.Timeout() || errors.Is(err, errSentinel) {
			return code, frames, nil
		}
		if err != nil {
			return code, frames, fmt.Errorf("frame %d: %w", frames, err)
		}
		if c != 0 {
			if code != 0 {
				return code, frames, fmt.Errorf("frame %d: a second close frame (%d after %d)", frames, c, code)
			}
			code = c
		}
	}
}

const (
	fuzzSentinel = "fuzz-sentinel"
	fuzzIdle     = 100 * time.Millisecond
)

var errSentinel = errors.New("sentinel pong")

// readServerFrame reads and checks one server frame; it returns the code
// of a close frame, or 0, and errSentinel for the sentinel's pong.
func readServerFrame(r *bufio.Reader) (int, error) {
	var h [2]byte
	if _, err := io.ReadFull(r, h[:1]); err != nil {
		return 0, err // nothing more: EOF, reset or a pause
	}
	if _, err := io.ReadFull(r, h[1:]); err != nil {
		return 0, fmt.Errorf("truncated frame header: %w", err)
	}
	fin, op := h[0]&0x80 != 0, h[0]&0x0F
	switch {
	case h[0]&0x70 != 0:
		return 0, fmt.Errorf("reserved bits set: %#x", h[0])
	case h[1]&0x80 != 0:
		return 0, errors.New("server frame is masked")
	case op != 0x1 && op != 0x8 && op != 0x9 && op != 0xA:
		return 0, fmt.Errorf("unexpected opcode %#x", op)
	case !fin:
		return 0, errors.New("fragmented server frame")
	}
	n := uint64(h[1] & 0x7F)
	switch n {
	case 126:
		var e [2]byte
		if _, err := io.ReadFull(r, e[:]); err != nil {
			return 0, fmt.Errorf("truncated length: %w", err)
		}
		if n = uint64(binary.BigEndian.Uint16(e[:])); n < 126 {
			return 0, fmt.Errorf("non-minimal 16-bit length %d", n)
		}
	case 127:
		var e [8]byte
		if _, err := io.ReadFull(r, e[:]); err != nil {
			return 0, fmt.Errorf("truncated length: %w", err)
		}
		if n = binary.BigEndian.Uint64(e[:]); n <= 0xFFFF || n > 1<<20 {
			return 0, fmt.Errorf("bad 64-bit length %d", n)
		}
	}
	if op >= 0x8 && n > 125 {
		return 0, fmt.Errorf("control frame of %d bytes", n)
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(r, p); err != nil {
		return 0, fmt.Errorf("truncated payload (%d bytes): %w", n, err)
	}
	switch op {
	case 0xA:
		if string(p) == fuzzSentinel {
			return 0, errSentinel
		}
	case 0x1:
		var v map[string]any
		if !utf8.Valid(p) || json.Unmarshal(p, &v) != nil {
			return 0, fmt.Errorf("text frame is not a JSON object: %q", p)
		}
		if _, ok := v["type"].(string); !ok {
			return 0, fmt.Errorf("message without a type: %q", p)
		}
	case 0x8:
		if len(p) == 1 {
			return 0, errors.New("one-byte close payload")
		}
		if len(p) == 0 {
			return CloseNoStatus, nil
		}
		code := int(binary.BigEndian.Uint16(p))
		if !validCloseCode(code) || !utf8.Valid(p[2:]) {
			return 0, fmt.Errorf("bad close frame: code %d reason %q", code, p[2:])
		}
		return code, nil
	}
	return 0, nil
}

// TestFuzzExchangeReadsFrames checks the fuzz harness itself: it sees the
// server's frames and close codes.
func TestFuzzExchangeReadsFrames(t *testing.T) {
	s := fuzzServer(t)
	join := clientFrame(true, 0x1, []byte(`{"type":"join","room":"lobby"}`), true)
	bye := clientFrame(true, 0x8, closePayload(1000, ""), true)
	code, frames, err := fuzzExchange(s.Addr(), "harness1", append(join, bye...))
	if err != nil || code != 1000 || frames < 3 { // welcome, joined, close
		t.Fatalf("code %d, %d frames, err %v", code, frames, err)
	}
	code, _, err = fuzzExchange(s.Addr(), "harness2", clientFrame(true, 0x1, []byte("x"), false))
	if err != nil || code != CloseProtocolError {
		t.Fatalf("unmasked frame: code %d, err %v", code, err)
	}
}
