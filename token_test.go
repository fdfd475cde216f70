package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/golang-jwt/jwt/v5"

	"nbchat/loop"
)

const tokenTestSecret = "0123456789abcdef0123456789abcdef"

func TestTokenSubcommandPrintsAVerifiableToken(t *testing.T) {
	var out bytes.Buffer
	if err := run([]string{"token", "-sub", "alice", "-ttl", "1h", "-rooms", "a,b", "-secret", tokenTestSecret}); err != nil {
		t.Fatal(err)
	}
	if err := runToken([]string{"-sub", "alice", "-ttl", "1h", "-rooms", "a,b", "-secret", tokenTestSecret}, &out); err != nil {
		t.Fatal(err)
	}
	var claims loop.TokenClaims
	_, err := jwt.ParseWithClaims(strings.TrimSpace(out.String()), &claims, func(*jwt.Token) (any, error) {
		return []byte(tokenTestSecret), nil
	}, jwt.WithValidMethods([]string{"HS256"}))
	if err != nil {
		t.Fatal(err)
	}
	if claims.Subject != "alice" || strings.Join(claims.Rooms, ",") != "a,b" || claims.ExpiresAt == nil {
		t.Fatalf("claims %+v", claims)
	}
}

func TestTokenSubcommandReadsSecretFromEnv(t *testing.T) {
	t.Setenv(authSecretEnv, tokenTestSecret)
	var out bytes.Buffer
	if err := runToken([]string{"-sub", "bob"}, &out); err != nil {
		t.Fatal(err)
	}
	if strings.Count(out.String(), ".") != 2 {
		t.Fatalf("not a JWT: %q", out.String())
	}
}

func TestTokenSubcommandRefusesBadInput(t *testing.T) {
	t.Setenv(authSecretEnv, "")
	for _, args := range [][]string{
		{"-sub", "alice"},                           // no secret
		{"-sub", "alice", "-secret", "short"},       // secret too short
		{"-secret", tokenTestSecret},                // no sub
		{"-sub", "a b", "-secret", tokenTestSecret}, // bad sub
		{"-sub", "alice", "-ttl", "0", "-secret", tokenTestSecret},
		{"-sub", "alice", "-rooms", "a,,b", "-secret", tokenTestSecret},
		{"-sub", "alice", "-secret", tokenTestSecret, "extra"},
	} {
		if err := runToken(args, &bytes.Buffer{}); err == nil {
			t.Errorf("runToken(%q) succeeded", args)
		}
	}
}
