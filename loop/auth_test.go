package loop

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

var testSecret = []byte("0123456789abcdef0123456789abcdef") // 32 bytes

// signed signs claims with method and key, for hand-made bad tokens.
func signed(t *testing.T, method jwt.SigningMethod, key any, claims jwt.Claims) string {
	t.Helper()
	tok, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func claimsFor(sub string, exp time.Duration, rooms []string) TokenClaims {
	return TokenClaims{
		RegisteredClaims: jwt.RegisteredClaims{Subject: sub, ExpiresAt: jwt.NewNumericDate(time.Now().Add(exp))},
		Rooms:            rooms,
	}
}

func issue(t *testing.T, sub string, rooms ...string) string {
	t.Helper()
	tok, err := IssueToken(testSecret, sub, time.Hour, rooms)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestAuthRefusesBadTokensBeforeUpgrade(t *testing.T) {
	s := startServer(t, Config{AuthSecret: testSecret})
	noExp := jwt.RegisteredClaims{Subject: "alice"}
	cases := []struct {
		name, query string
		want        int
	}{
		{"no token", "name=alice", http.StatusUnauthorized},
		{"empty token", "token=", http.StatusUnauthorized},
		{"malformed", "token=not.a.jwt", http.StatusUnauthorized},
		{"garbage", "token=" + strings.Repeat("x", 100), http.StatusUnauthorized},
		{"oversized", "token=" + strings.Repeat("x", maxToken+1), http.StatusUnauthorized},
		{"expired", "token=" + signed(t, jwt.SigningMethodHS256, testSecret, claimsFor("alice", -time.Minute, nil)), http.StatusUnauthorized},
		{"no expiry", "token=" + signed(t, jwt.SigningMethodHS256, testSecret, noExp), http.StatusUnauthorized},
		{"bad signature", "token=" + signed(t, jwt.SigningMethodHS256, []byte("another secret, also 32 bytes!!!"), claimsFor("alice", time.Hour, nil)), http.StatusUnauthorized},
		{"alg none", "token=" + signed(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, claimsFor("alice", time.Hour, nil)), http.StatusUnauthorized},
		{"alg HS512 with the right secret", "token=" + signed(t, jwt.SigningMethodHS512, testSecret, claimsFor("alice", time.Hour, nil)), http.StatusUnauthorized},
		{"alg HS384 with the right secret", "token=" + signed(t, jwt.SigningMethodHS384, testSecret, claimsFor("alice", time.Hour, nil)), http.StatusUnauthorized},
		{"tampered payload", "token=" + tamper(issue(t, "alice")), http.StatusUnauthorized},
		{"subject not a name", "token=" + signed(t, jwt.SigningMethodHS256, testSecret, claimsFor("a b", time.Hour, nil)), http.StatusUnauthorized},
		{"empty subject", "token=" + signed(t, jwt.SigningMethodHS256, testSecret, claimsFor("", time.Hour, nil)), http.StatusUnauthorized},
		{"name differs from sub", "token=" + issue(t, "alice") + "&name=mallory", http.StatusBadRequest},
		{"room outside the token", "token=" + issue(t, "alice", "a", "b") + "&room=c", http.StatusForbidden},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if status, _ := handshake(t, s.Addr(), "/ws?"+tc.query, nil); status != tc.want {
				t.Fatalf("status %d, want %d", status, tc.want)
			}
		})
	}
	// Nothing was upgraded.
	if s.Conns() != 0 {
		t.Fatalf("%d connections open after refusals", s.Conns())
	}
}

// tamper changes the token's payload, keeping its signature.
func tamper(tok string) string {
	parts := strings.Split(tok, ".")
	claims := claimsFor("admin", time.Hour, nil)
	other := signedNoCheck(claims)
	parts[1] = strings.Split(other, ".")[1]
	return strings.Join(parts, ".")
}

func signedNoCheck(claims jwt.Claims) string {
	tok, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte("irrelevant"))
	return tok
}

func TestAuthNameComesFromToken(t *testing.T) {
	s := startServer(t, Config{AuthSecret: testSecret})
	status, c := handshake(t, s.Addr(), "/ws?token="+url.QueryEscape(issue(t, "alice")), nil)
	if status != http.StatusSwitchingProtocols {
		t.Fatalf("status %d", status)
	}
	if m := c.expect("welcome"); m.str("name") != "alice" {
		t.Fatalf("got %v", m)
	}
	// A matching name parameter is fine.
	status, c = handshake(t, s.Addr(), "/ws?name=bob&token="+issue(t, "bob"), nil)
	if status != http.StatusSwitchingProtocols {
		t.Fatalf("status %d", status)
	}
	if m := c.expect("welcome"); m.str("name") != "bob" {
		t.Fatalf("got %v", m)
	}
	// A second token for alice is alice on another device.
	status, c = handshake(t, s.Addr(), "/ws?token="+issue(t, "alice"), nil)
	if status != http.StatusSwitchingProtocols {
		t.Fatalf("second alice: status %d, want 101", status)
	}
	if m := c.expect("welcome"); m.str("name") != "alice" {
		t.Fatalf("second alice got %v", m)
	}
}

func TestAuthRoomsClaimLimitsJoins(t *testing.T) {
	s := startServer(t, Config{AuthSecret: testSecret})
	status, c := handshake(t, s.Addr(), "/ws?room=a&token="+issue(t, "alice", "a", "b"), nil)
	if status != http.StatusSwitchingProtocols {
		t.Fatalf("status %d", status)
	}
	c.expect("welcome")
	c.expect("joined")
	c.send(`{"type":"join","room":"b","id":1}`)
	if m := c.expect("joined"); m.str("room") != "b" {
		t.Fatalf("got %v", m)
	}
	c.send(`{"type":"join","room":"c","id":2}`)
	if m := c.expect("error"); m.str("code") != "forbidden" || m.num("ref") != 2 {
		t.Fatalf("got %v", m)
	}
	// Still usable, and still in a.
	c.send(`{"type":"msg","room":"a","text":"hi"}`)
	c.expect("msg")

	// An empty rooms claim allows no room at all.
	tok := signed(t, jwt.SigningMethodHS256, testSecret, jwt.MapClaims{
		"sub": "bob", "exp": time.Now().Add(time.Hour).Unix(), "rooms": []string{},
	})
	status, c = handshake(t, s.Addr(), "/ws?token="+tok, nil)
	if status != http.StatusSwitchingProtocols {
		t.Fatalf("status %d", status)
	}
	c.expect("welcome")
	c.send(`{"type":"join","room":"a"}`)
	if m := c.expect("error"); m.str("code") != "forbidden" {
		t.Fatalf("got %v", m)
	}

	// Without the claim, any room.
	status, c = handshake(t, s.Addr(), "/ws?room=zzz&token="+issue(t, "carol"), nil)
	if status != http.StatusSwitchingProtocols {
		t.Fatalf("status %d", status)
	}
	c.expect("welcome")
	c.expect("joined")
}

func TestAuthOffByDefault(t *testing.T) {
	s := startServer(t, Config{})
	// A token is ignored, and the name comes from the query as before.
	status, c := handshake(t, s.Addr(), "/ws?name=alice&token=whatever", nil)
	if status != http.StatusSwitchingProtocols {
		t.Fatalf("status %d", status)
	}
	if m := c.expect("welcome"); m.str("name") != "alice" {
		t.Fatalf("got %v", m)
	}
}

func TestAuthSecretTooShortIsRefused(t *testing.T) {
	if _, err := New(Config{AuthSecret: []byte("short")}); err == nil {
		t.Fatal("New accepted a 5-byte secret")
	}
	if _, err := IssueToken([]byte("short"), "alice", time.Hour, nil); err == nil {
		t.Fatal("IssueToken accepted a 5-byte secret")
	}
}

func TestIssueTokenValidates(t *testing.T) {
	for _, tc := range []struct {
		sub   string
		ttl   time.Duration
		rooms []string
	}{
		{"", time.Hour, nil},
		{"a b", time.Hour, nil},
		{"alice", 0, nil},
		{"alice", time.Hour, []string{"ok", "not ok"}},
	} {
		if _, err := IssueToken(testSecret, tc.sub, tc.ttl, tc.rooms); err == nil {
			t.Errorf("IssueToken(%q, %v, %q) succeeded", tc.sub, tc.ttl, tc.rooms)
		}
	}
}

func TestRoomAllowedDoesNotAllocate(t *testing.T) {
	allowed := []string{"a", "b", "lobby"}
	name := []byte("lobby")
	if n := testing.AllocsPerRun(100, func() { roomAllowed(allowed, name) }); n != 0 {
		t.Fatalf("%v allocations", n)
	}
}
