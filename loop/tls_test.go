package loop

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// selfSigned writes a certificate for 127.0.0.1 and its key to dir and
// returns the file names and a pool trusting the certificate.
func selfSigned(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "nbchat test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// tlsConnect opens a wss:// connection as name and reads the welcome.
func tlsConnect(t *testing.T, addr string, pool *x509.CertPool, name, room string) *testClient {
	t.Helper()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatalf("TLS dial: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	var key [16]byte
	_, _ = rand.Read(key[:])
	k := base64.StdEncoding.EncodeToString(key[:])
	path := "/ws?name=" + name
	if room != "" {
		path += "&room=" + room
	}
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: %s\r\n\r\n", path, addr, k)
	r := bufio.NewReader(conn)
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		t.Fatalf("read handshake response: %v", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Get("Sec-WebSocket-Accept") != acceptKey(k) {
		t.Fatalf("handshake: %d %v", resp.StatusCode, resp.Header)
	}
	c := &testClient{t: t, conn: conn, r: r}
	c.expect("welcome")
	if room != "" {
		c.expect("joined")
	}
	return c
}

func TestTLSServesWSSAndHTTPS(t *testing.T) {
	certFile, keyFile, pool := selfSigned(t)
	s := startServer(t, Config{TLSCertFile: certFile, TLSKeyFile: keyFile})

	// https:// on the same port.
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	res, err := hc.Get("https://" + s.Addr() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK || string(body) != "ok\n" {
		t.Fatalf("healthz over TLS: %d %q", res.StatusCode, body)
	}

	// wss:// chat, with messages bigger than one TLS record's worth in a
	// burst, pings, and the close handshake.
	alice := tlsConnect(t, s.Addr(), pool, "alice", "lobby")
	bob := tlsConnect(t, s.Addr(), pool, "bob", "lobby")
	alice.expect("presence")
	text := strings.Repeat("x", 4000)
	for i := range 20 {
		alice.send(fmt.Sprintf(`{"type":"msg","room":"lobby","text":"%d%s"}`, i, text[:3990]))
	}
	for _, c := range []*testClient{alice, bob} {
		for i := range 20 {
			if m := c.expect("msg"); !strings.HasPrefix(m.str("text"), fmt.Sprint(i)) || m.num("seq") != int64(i+1) {
				t.Fatalf("message %d: got seq %d", i, m.num("seq"))
			}
		}
	}
	bob.writeFrame(true, 0x9, []byte("tls ping"), true)
	expectPong(t, bob, "tls ping")
	bob.writeFrame(true, 0x8, closePayload(1000, "bye"), true)
	if code := bob.expectClose(3 * time.Second); code != 1000 {
		t.Fatalf("close code %d", code)
	}
	bob.expectEOF(3 * time.Second)
	bob.conn.Close() // else the server waits CloseGrace for it
	if m := alice.await("presence"); m.str("event") != "leave" {
		t.Fatalf("got %v", m)
	}

	// A plain-text client on the TLS port gets no upgrade.
	conn, err := net.DialTimeout("tcp", s.Addr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(conn, "GET /ws?name=carol HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: %s\r\n\r\n", base64.StdEncoding.EncodeToString(make([]byte, 16)))
	buf, _ := io.ReadAll(conn)
	if strings.Contains(string(buf), "101") {
		t.Fatalf("plain client upgraded on the TLS port: %q", buf)
	}
}

func TestTLSNeedsCertAndKey(t *testing.T) {
	if _, err := New(Config{TLSCertFile: "cert.pem"}); err == nil {
		t.Fatal("New accepted a certificate without a key")
	}
	if _, err := New(Config{Addr: "127.0.0.1:0", TLSCertFile: "/nonexistent", TLSKeyFile: "/nonexistent"}); err == nil {
		t.Fatal("New accepted missing key files")
	}
}
