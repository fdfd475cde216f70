package main

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestSIGTERMClosesClientsWith1001 runs the real binary, connects a client,
// sends SIGTERM and checks the client gets close 1001 and the process exits.
func TestSIGTERMClosesClientsWith1001(t *testing.T) {
	bin := buildBinary(t)
	addr := freeAddr(t)
	cmd, exited := startBinary(t, bin, "-addr", addr, "-shutdown-timeout", "3s", "-data", t.TempDir())
	waitHealthy(t, addr)

	conn, r := dialWS(t, addr, "/ws?name=alice&room=lobby")
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	code := readCloseCode(t, conn, r)
	if code != 1001 {
		t.Fatalf("close code %d, want 1001", code)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("exit: %v", err)
		}
	case <-time.After(6 * time.Second):
		t.Fatal("process did not exit after SIGTERM")
	}
}

func buildBinary(t *testing.T) string {
	bin := filepath.Join(t.TempDir(), "nbchat")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return bin
}

func startBinary(t *testing.T, bin string, args ...string) (*exec.Cmd, chan error) {
	cmd := exec.Command(bin, args...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	return cmd, exited
}

// TestSIGKILLLosesNoAcknowledgedMessage floods a room with messages that
// carry ids, kills the server with SIGKILL mid-flood, restarts it on the
// same data directory and checks that every acknowledged message is in
// history, in order, once, and that seq continues after the last one.
func TestSIGKILLLosesNoAcknowledgedMessage(t *testing.T) {
	bin := buildBinary(t)
	data := t.TempDir()
	addr := freeAddr(t)
	cmd, exited := startBinary(t, bin, "-addr", addr, "-data", data, "-log-level", "warn")
	waitHealthy(t, addr)

	conn, r := dialWS(t, addr, "/ws?name=flooder&room=lobby")
	acked := map[int64]string{} // seq -> text
	var mu sync.Mutex
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		for {
			m, err := readJSON(conn, r, 10*time.Second)
			if err != nil {
				return // the server died
			}
			if m["type"] == "ack" {
				mu.Lock()
				acked[int64(m["seq"].(float64))] = m["ref"].(string)
				mu.Unlock()
			}
		}
	}()
	// 40 messages/s stays under the rate limit; kill after a while.
	killAt := time.Now().Add(1500 * time.Millisecond)
	for i := 0; time.Now().Before(killAt); i++ {
		id := fmt.Sprintf("m%d", i)
		if err := writeText(conn, fmt.Sprintf(`{"type":"msg","room":"lobby","text":%q,"id":%q}`, id, id)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(25 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-exited
	<-readerDone
	mu.Lock()
	n := len(acked)
	mu.Unlock()
	if n < 10 {
		t.Fatalf("only %d messages acknowledged before the kill", n)
	}

	startBinary(t, bin, "-addr", addr, "-data", data, "-log-level", "warn")
	waitHealthy(t, addr)
	conn, r = dialWS(t, addr, "/ws?name=reader")
	if err := writeText(conn, `{"type":"join","room":"lobby","since":0}`); err != nil {
		t.Fatal(err)
	}
	var last int64
	seen := map[int64]bool{}
	for {
		m, err := readJSON(conn, r, 3*time.Second)
		if err != nil {
			break
		}
		switch m["type"] {
		case "joined":
			last = int64(m["seq"].(float64))
		case "msg":
			seq := int64(m["seq"].(float64))
			if seen[seq] || seq != int64(len(seen))+1 {
				t.Fatalf("history seq %d after %d: out of order or repeated", seq, len(seen))
			}
			seen[seq] = true
			if text, ok := acked[seq]; ok && m["text"] != text {
				t.Fatalf("seq %d is %q after restart, was acknowledged as %q", seq, m["text"], text)
			}
		}
		if last > 0 && int64(len(seen)) == last {
			break
		}
	}
	for seq := range acked {
		if !seen[seq] {
			t.Fatalf("acknowledged message seq %d is missing after the restart (%d acked, %d in history)", seq, n, len(seen))
		}
	}
	if err := writeText(conn, `{"type":"msg","room":"lobby","text":"after","id":"x"}`); err != nil {
		t.Fatal(err)
	}
	for {
		m, err := readJSON(conn, r, 3*time.Second)
		if err != nil {
			t.Fatalf("no ack after restart: %v", err)
		}
		if m["type"] == "ack" {
			if seq := int64(m["seq"].(float64)); seq != last+1 {
				t.Fatalf("first seq after restart %d, want %d: seq must continue", seq, last+1)
			}
			break
		}
	}
	t.Logf("%d acknowledged before SIGKILL, %d in history after restart", n, len(seen))
}

// writeText sends a masked text frame (payloads under 126 bytes).
func writeText(conn net.Conn, s string) error {
	key := [4]byte{1, 2, 3, 4}
	b := []byte{0x81, 0x80 | byte(len(s))}
	b = append(b, key[:]...)
	for i := 0; i < len(s); i++ {
		b = append(b, s[i]^key[i%4])
	}
	_, err := conn.Write(b)
	return err
}

// readJSON reads the next text message, skipping control frames.
func readJSON(conn net.Conn, r *bufio.Reader, timeout time.Duration) (map[string]any, error) {
	_ = conn.SetReadDeadline(time.Now().Add(timeout))
	for {
		var h [2]byte
		if _, err := io.ReadFull(r, h[:]); err != nil {
			return nil, err
		}
		n := int(h[1] & 0x7F)
		if n == 126 {
			var e [2]byte
			if _, err := io.ReadFull(r, e[:]); err != nil {
				return nil, err
			}
			n = int(binary.BigEndian.Uint16(e[:]))
		}
		p := make([]byte, n)
		if _, err := io.ReadFull(r, p); err != nil {
			return nil, err
		}
		if h[0]&0x0F != 0x1 {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal(p, &m); err != nil {
			return nil, err
		}
		return m, nil
	}
}

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func waitHealthy(t *testing.T, addr string) {
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		res, err := http.Get("http://" + addr + "/healthz")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("server on %s never became healthy", addr)
}

func dialWS(t *testing.T, addr, path string) (net.Conn, *bufio.Reader) {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", path, addr)
	r := bufio.NewReader(conn)
	res, err := http.ReadResponse(r, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: status %d", res.StatusCode)
	}
	return conn, r
}

// readCloseCode skips frames until a close frame and returns its code.
func readCloseCode(t *testing.T, conn net.Conn, r *bufio.Reader) int {
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		var h [2]byte
		if _, err := io.ReadFull(r, h[:]); err != nil {
			t.Fatalf("reading frames: %v", err)
		}
		n := int(h[1] & 0x7F)
		switch n {
		case 126:
			var e [2]byte
			_, _ = io.ReadFull(r, e[:])
			n = int(binary.BigEndian.Uint16(e[:]))
		case 127:
			t.Fatal("unexpected huge frame")
		}
		p := make([]byte, n)
		if _, err := io.ReadFull(r, p); err != nil {
			t.Fatal(err)
		}
		if h[0]&0x0F == 0x8 {
			if len(p) < 2 {
				return 1005
			}
			return int(binary.BigEndian.Uint16(p))
		}
	}
}

// TestGOMAXPROCSCountsThePollers checks that the binary gives each nbio
// poller a P of its own on top of the CPUs, unless GOMAXPROCS is set.
func TestGOMAXPROCSCountsThePollers(t *testing.T) {
	bin := buildBinary(t)
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GOMAXPROCS=") {
			env = append(env, kv)
		}
	}
	base := runtime.NumCPU()
	if os.Getenv("GOMAXPROCS") == "" {
		base = runtime.GOMAXPROCS(0) // also what a CPU quota allows
	}
	for _, tc := range []struct {
		env  string
		want int
	}{
		{"", base + 3},
		{"GOMAXPROCS=1", 1},
	} {
		addr := freeAddr(t)
		cmd := exec.Command(bin, "-addr", addr, "-data=", "-pollers", "3", "-log-level", "warn")
		cmd.Env = env
		if tc.env != "" {
			cmd.Env = append(cmd.Env, tc.env)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		waitHealthy(t, addr)
		if got := gaugeValue(t, addr, "go_sched_gomaxprocs_threads"); got != tc.want {
			t.Errorf("env %q: GOMAXPROCS %d, want %d", tc.env, got, tc.want)
		}
	}
}

// gaugeValue reads one unlabelled integer metric from the server.
func gaugeValue(t *testing.T, addr, name string) int {
	t.Helper()
	res, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	sc := bufio.NewScanner(res.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			n, err := strconv.Atoi(v)
			if err != nil {
				t.Fatalf("%s = %q", name, v)
			}
			return n
		}
	}
	t.Fatalf("no %s in /metrics", name)
	return 0
}
