package loop

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"nbchat/protocol"
)

// Token authentication. With Config.AuthSecret set, /ws requires a JWT in
// ?token=, signed with HMAC-SHA256 under that secret. Its "sub" is the
// connection's name, its "exp" is required, and an optional "rooms" claim
// lists the only rooms the connection may join.

// MinAuthSecret is the shortest secret accepted: RFC 7518 section 3.2
// requires an HS256 key of at least the hash size.
const MinAuthSecret = 32

// maxToken bounds the token parsed, so a huge query costs little.
const maxToken = 4096

// TokenClaims are the claims of an nbchat token.
type TokenClaims struct {
	jwt.RegisteredClaims
	// Rooms, when present (even empty), lists the only rooms the holder
	// may join; absent, any room may be joined.
	Rooms []string `json:"rooms,omitempty"`
}

// tokenParser accepts HS256 only: "none" and every other algorithm are
// refused before the key is even looked at (algorithm confusion).
var tokenParser = jwt.NewParser(
	jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
	jwt.WithExpirationRequired(),
)

// IssueToken returns a token for sub, valid for ttl, limited to rooms if
// rooms is not empty.
func IssueToken(secret []byte, sub string, ttl time.Duration, rooms []string) (string, error) {
	if len(secret) < MinAuthSecret {
		return "", fmt.Errorf("loop: auth secret must be at least %d bytes", MinAuthSecret)
	}
	if !protocol.ValidName(sub) {
		return "", errors.New("loop: sub must be 1-32 letters, digits, '_', '-' or '.'")
	}
	if ttl <= 0 {
		return "", errors.New("loop: ttl must be positive")
	}
	for _, r := range rooms {
		if !protocol.ValidName(r) {
			return "", fmt.Errorf("loop: bad room name %q", r)
		}
	}
	now := time.Now()
	claims := TokenClaims{
		RegisteredClaims: jwt.RegisteredClaims{
			Subject:   sub,
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
		},
		Rooms: rooms,
	}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(secret)
}

// errForbidden answers a join outside the token's rooms.
var errForbidden = &protocol.Error{Code: protocol.CodeForbidden, Message: "your token does not allow that room"}

// authenticate checks the upgrade request's token and returns the name it
// grants and the rooms it is limited to (nil: any), or why it refuses:
// 401 for a missing or bad token, 400 for a name that is not the token's,
// 403 for a ?room= outside the token's rooms.
func (s *Server) authenticate(q query) (name string, rooms []string, no refusal) {
	tok := q.Get("token")
	if tok == "" || len(tok) > maxToken {
		return "", nil, unauthorized("missing token")
	}
	var claims TokenClaims
	_, err := tokenParser.ParseWithClaims(tok, &claims, func(*jwt.Token) (any, error) {
		return s.cfg.AuthSecret, nil
	})
	if err != nil {
		s.log.Debug("token refused", "err", err)
		return "", nil, unauthorized("invalid or expired token")
	}
	if !protocol.ValidName(claims.Subject) {
		return "", nil, unauthorized("token subject is not a valid name")
	}
	if q.Has("name") && q.Get("name") != claims.Subject {
		return "", nil, refusal{status: http.StatusBadRequest, msg: "name does not match the token"}
	}
	if claims.Rooms != nil && q.Has("room") && !roomAllowed(claims.Rooms, []byte(q.Get("room"))) {
		return "", nil, refusal{status: http.StatusForbidden, msg: "your token does not allow that room"}
	}
	return claims.Subject, claims.Rooms, refusal{}
}

func unauthorized(msg string) refusal {
	return refusal{status: http.StatusUnauthorized, msg: msg, header: "WWW-Authenticate", value: `Bearer realm="nbchat"`}
}

// roomAllowed reports whether name is in allowed. Tokens list few rooms,
// so a linear scan beats a map, and comparing string(name) allocates
// nothing.
func roomAllowed(allowed []string, name []byte) bool {
	for _, r := range allowed {
		if r == string(name) {
			return true
		}
	}
	return false
}
