package loop

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"testing"
)

// BenchmarkHandshake measures one upgrade over a real socket, dial to 101,
// client included; -benchmem shows what each handshake allocates. The
// client closes each connection, so fd numbers are reused as under churn,
// with a reset so that benchmark rounds do not use up the client ports in
// TIME_WAIT.
func BenchmarkHandshake(b *testing.B) {
	s := startServer(b, Config{RateBurst: -1})
	addr := s.Addr()
	b.ReportAllocs()
	for i := range b.N {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		_, err = fmt.Fprintf(conn, "GET /ws?name=u%d&room=r%d HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
			"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", i, i%100, addr)
		if err != nil {
			b.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			b.Fatal(err)
		}
		if resp.StatusCode != http.StatusSwitchingProtocols {
			b.Fatalf("status %d", resp.StatusCode)
		}
		_ = conn.(*net.TCPConn).SetLinger(0)
		_ = conn.Close()
	}
}
