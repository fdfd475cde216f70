// Package web holds the browser chat page, embedded in the binary.
package web

import (
	"bytes"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"net/http"
	"time"
)

//go:embed index.html
var page []byte

// etag lets browsers revalidate cheaply: Cache-Control is no-cache, so they
// ask every time, and an unchanged page costs a 304.
var etag = func() string {
	sum := sha256.Sum256(page)
	return `"` + hex.EncodeToString(sum[:8]) + `"`
}()

// ContentSecurityPolicy is sent with the page. The page is one file with inline
// script and style; it only talks to its own origin (HTTP and WebSocket).
const ContentSecurityPolicy = "default-src 'self'; script-src 'self' 'unsafe-inline'; " +
	"style-src 'self' 'unsafe-inline'; connect-src 'self' ws: wss:; img-src 'self' data:"

// Handler serves the page at "/" (and 404 for other paths under it); the server mounts it on "/".
func Handler() http.Handler {
	return http.HandlerFunc(serve)
}

func serve(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Security-Policy", ContentSecurityPolicy)
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	if r.URL.Path != "/" {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		h.Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-cache")
	h.Set("ETag", etag)
	// ServeContent handles HEAD, If-None-Match and Content-Length.
	http.ServeContent(w, r, "index.html", time.Time{}, bytes.NewReader(page))
}
