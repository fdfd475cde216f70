package loop

import (
	"net/url"
	"strings"
)

// query reads an upgrade's parameters straight from the raw query string:
// an upgrade reads at most four, and url.Values would build a map of them
// for every connection. Get and Has agree with url.ParseQuery's: the first
// value wins, and pairs it rejects (a semicolon, a bad escape) are skipped.
type query string

// Get returns the first value of key, or "".
func (q query) Get(key string) string {
	v, _ := q.lookup(key)
	return v
}

// Has reports whether key is present.
func (q query) Has(key string) bool {
	_, ok := q.lookup(key)
	return ok
}

func (q query) lookup(key string) (string, bool) {
	s := string(q)
	for s != "" {
		var pair string
		pair, s, _ = strings.Cut(s, "&")
		if pair == "" || strings.Contains(pair, ";") {
			continue
		}
		k, v, _ := strings.Cut(pair, "=")
		k, ok := unescape(k)
		if !ok || k != key {
			continue
		}
		if v, ok = unescape(v); ok {
			return v, true
		}
	}
	return "", false
}

// unescape is url.QueryUnescape without its allocation for plain text.
func unescape(s string) (string, bool) {
	if !strings.ContainsAny(s, "%+") {
		return s, true
	}
	u, err := url.QueryUnescape(s)
	return u, err == nil
}
