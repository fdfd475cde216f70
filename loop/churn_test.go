//go:build !race

package loop

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestNoRaceHandshakeChurn makes 20,000 fresh handshakes while other
// clients send garbage and abort with RST, and checks that every fresh
// client gets an HTTP response: none is dropped without one (NBIO.md
// section 11). Too slow under the race detector, hence the build tag.
func TestNoRaceHandshakeChurn(t *testing.T) {
	if testing.Short() {
		t.Skip("churn test skipped in -short mode")
	}
	const (
		handshakes = 20000
		workers    = 32
		aborters   = 8
	)
	s := startServer(t, Config{})
	addr := s.Addr()

	var (
		next       atomic.Int64
		statuses   sync.Map // status code -> *atomic.Int64
		dropped    atomic.Int64
		timeouts   atomic.Int64
		dialErrs   atomic.Int64
		garbage    atomic.Int64
		mu         sync.Mutex
		dropErrors []string
	)
	count := func(code int) {
		v, _ := statuses.LoadOrStore(code, new(atomic.Int64))
		v.(*atomic.Int64).Add(1)
	}

	stop := make(chan struct{})
	var abortWG sync.WaitGroup
	for g := range aborters {
		abortWG.Add(1)
		go func() {
			defer abortWG.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 1))
			for {
				select {
				case <-stop:
					return
				default:
				}
				abortWithGarbage(addr, rng, g)
				garbage.Add(1)
			}
		}()
	}

	start := time.Now()
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Spread source addresses so client ports in TIME_WAIT never
			// run out.
			d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(1+w%8))}}
			for {
				i := next.Add(1)
				if i > handshakes {
					return
				}
				code, err := freshHandshake(d, addr, fmt.Sprintf("churn%d", i))
				switch {
				case err == nil:
					count(code)
				case errors.Is(err, errDial):
					dialErrs.Add(1)
				case isTimeout(err):
					timeouts.Add(1)
				default:
					dropped.Add(1)
					mu.Lock()
					if len(dropErrors) < 10 {
						dropErrors = append(dropErrors, err.Error())
					}
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(stop)
	abortWG.Wait()

	var report []string
	answered := int64(0)
	statuses.Range(func(k, v any) bool {
		n := v.(*atomic.Int64).Load()
		answered += n
		report = append(report, fmt.Sprintf("%d: %d", k, n))
		return true
	})
	sort.Strings(report)
	t.Logf("%d handshakes in %v alongside %d garbage+RST clients: answered %d (%s), dropped %d, timed out %d, dial errors %d",
		handshakes, elapsed.Round(time.Millisecond), garbage.Load(), answered, strings.Join(report, ", "),
		dropped.Load(), timeouts.Load(), dialErrs.Load())
	if dropped.Load() != 0 || timeouts.Load() != 0 || dialErrs.Load() != 0 {
		t.Fatalf("%d fresh clients dropped without a response, %d timed out, %d could not dial; first errors: %q",
			dropped.Load(), timeouts.Load(), dialErrs.Load(), dropErrors)
	}
	if answered != handshakes {
		t.Fatalf("answered %d of %d", answered, handshakes)
	}
}

var errDial = errors.New("dial failed")

// freshHandshake dials, sends a valid upgrade and reads the response
// status, then aborts. Any error after the request was sent means the
// server dropped the connection without answering (or took over 5 s).
func freshHandshake(d net.Dialer, addr, name string) (int, error) {
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		return 0, fmt.Errorf("%w: %v", errDial, err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write(upgradeRequest(addr, "/ws?name="+name, nil)); err != nil {
		return 0, fmt.Errorf("write: %w", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return 0, fmt.Errorf("read response: %w", err)
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		// Leave with a close frame half the time, or just go (EOF).
		if rand.IntN(2) == 0 {
			_, _ = conn.Write(clientFrame(true, 0x8, closePayload(1000, ""), true))
		}
	}
	return resp.StatusCode, nil
}

// abortWithGarbage connects, sends bytes that are not a valid request
// (noise, a truncated request, a request with a bad key, or nothing),
// maybe waits a little, and resets the connection (SO_LINGER 0).
func abortWithGarbage(addr string, rng *rand.Rand, g int) {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return
	}
	tc := conn.(*net.TCPConn)
	_ = tc.SetLinger(0)
	var b []byte
	switch rng.IntN(4) {
	case 0:
		b = make([]byte, 1+rng.IntN(512))
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
	case 1:
		req := upgradeRequest(addr, fmt.Sprintf("/ws?name=garbage%d", g), nil)
		b = req[:rng.IntN(len(req))]
	case 2:
		b = []byte("GET /ws?name=x HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: bad\r\n\r\n")
	case 3:
	}
	if len(b) > 0 {
		_, _ = conn.Write(b)
	}
	if rng.IntN(3) == 0 {
		time.Sleep(time.Duration(rng.IntN(2000)) * time.Microsecond)
	}
	_ = conn.Close()
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() && !errors.Is(err, io.EOF)
}
