package web

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func get(t *testing.T, method, path string, hdr map[string]string) (*http.Response, string) {
	t.Helper()
	req := httptest.NewRequest(method, path, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	Handler().ServeHTTP(rec, req)
	res := rec.Result()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res, string(body)
}

func TestPage(t *testing.T) {
	res, body := get(t, http.MethodGet, "/", nil)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("status = %d, want 200", res.StatusCode)
	}
	want := map[string]string{
		"Content-Type":            "text/html; charset=utf-8",
		"Cache-Control":           "no-cache",
		"X-Content-Type-Options":  "nosniff",
		"Content-Security-Policy": ContentSecurityPolicy,
	}
	for k, v := range want {
		if got := res.Header.Get(k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	for _, d := range []string{"default-src 'self'", "connect-src 'self' ws: wss:", "img-src 'self' data:"} {
		if !strings.Contains(ContentSecurityPolicy, d) {
			t.Errorf("CSP lacks %q", d)
		}
	}
	for _, s := range []string{
		`<!doctype html>`,
		`id="name-input"`, `id="login-button"`, `id="room-input"`, `id="join-button"`,
		`id="message-input"`, `id="connection-status"`, `id="member-list"`, `id="messages"`,
		`aria-live="polite"`, `data-testid="message-input"`, `window.nbchat`,
		`white-space: pre-wrap`, `/ws?name=`,
		// Recovery: rejoin from a seq, DMs from a seq, pending messages, history paging.
		`since`, `dm_since=`, `pendingCount`, `type: 'history'`, `'data-testid': 'load-earlier'`,
	} {
		if !strings.Contains(body, s) {
			t.Errorf("page lacks %q", s)
		}
	}
	// No external resources: the page must work offline and under the CSP.
	for _, s := range []string{`src="http`, `href="http`, `<script src`, `<link rel="stylesheet"`, `.innerHTML`, `insertAdjacentHTML`, `document.write`} {
		if strings.Contains(body, s) {
			t.Errorf("page contains %q", s)
		}
	}
}

func TestHeadAndETag(t *testing.T) {
	res, body := get(t, http.MethodHead, "/", nil)
	if res.StatusCode != http.StatusOK || body != "" {
		t.Fatalf("HEAD: status %d, body %d bytes", res.StatusCode, len(body))
	}
	tag := res.Header.Get("ETag")
	if tag == "" {
		t.Fatal("no ETag")
	}
	res, _ = get(t, http.MethodGet, "/", map[string]string{"If-None-Match": tag})
	if res.StatusCode != http.StatusNotModified {
		t.Fatalf("If-None-Match: status %d, want 304", res.StatusCode)
	}
}

func TestOtherPaths(t *testing.T) {
	for _, p := range []string{"/index.html", "/x", "/static/app.js", "//"} {
		res, _ := get(t, http.MethodGet, p, nil)
		if res.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: status %d, want 404", p, res.StatusCode)
		}
		if res.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("GET %s: no nosniff", p)
		}
	}
	res, _ := get(t, http.MethodPost, "/", nil)
	if res.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /: status %d, want 405", res.StatusCode)
	}
}
