package loop

import (
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"nbchat/protocol"
)

// panicText is the message text that makes handling panic in tests.
const panicText = "please-panic-now"

// The hook is set once, before any server starts, so no test races with
// a poller reading it; it only fires on panicText.
func init() {
	testPanicHook = func(r *protocol.Request) {
		if string(r.Text) == panicText {
			panic("test panic on request")
		}
	}
}

// syncBuffer is a log sink safe for the server's goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestPanicInHandlerClosesThatConnectionWith1011(t *testing.T) {
	var logs syncBuffer
	s := startServer(t, Config{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	alice := connect(t, s.Addr(), "alice", "lobby")
	bob := connect(t, s.Addr(), "bob", "lobby")
	alice.expect("presence")

	alice.send(`{"type":"msg","room":"lobby","text":"` + panicText + `"}`)
	if code := alice.expectClose(3 * time.Second); code != CloseInternalError {
		t.Fatalf("close code %d, want 1011", code)
	}
	alice.writeFrame(true, 0x8, closePayload(CloseInternalError, ""), true)
	alice.expectEOF(5 * time.Second)

	// The others are unaffected, and the server keeps serving.
	if m := bob.await("presence"); m.str("event") != "leave" || m.str("name") != "alice" {
		t.Fatalf("got %v", m)
	}
	bob.send(`{"type":"msg","room":"lobby","text":"still here"}`)
	if m := bob.expect("msg"); m.str("text") != "still here" {
		t.Fatalf("got %v", m)
	}
	carol := connect(t, s.Addr(), "carol", "")
	carol.send(`{"type":"ping","id":1}`)
	carol.expect("pong")

	out := logs.String()
	if !strings.Contains(out, "test panic on request") || !strings.Contains(out, "panic_test.go") {
		t.Fatalf("panic not logged with its stack:\n%s", out)
	}
	// Counted once nbio has closed the socket, which may be after the EOF.
	waitFor(t, func() bool { return metricValue(t, s, `nbchat_closes_total{reason="internal"}`) == "1" })
}

// metricValue scrapes /metrics and returns the value of the series named
// exactly by series ("" if absent).
func metricValue(t testing.TB, s *Server, series string) string {
	t.Helper()
	res, err := http.Get("http://" + s.Addr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	for line := range strings.SplitSeq(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			return v
		}
	}
	return ""
}
