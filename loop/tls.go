package loop

import (
	"fmt"

	"github.com/lesismal/llib/std/crypto/tls"
)

// loadTLS builds the TLS configuration for Config.TLSCertFile/TLSKeyFile.
// nbio's non-blocking TLS is llib's fork of crypto/tls, so the config is
// llib's type.
func loadTLS(certFile, keyFile string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("loop: TLS key pair: %w", err)
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
		// The endpoint speaks HTTP/1.1 only: WebSocket over HTTP/2
		// (RFC 8441) is not supported.
		NextProtos: []string{"http/1.1"},
	}, nil
}
