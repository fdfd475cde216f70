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
		// QueryUnescape returns plain text as it is, without allocating.
		k, err := url.QueryUnescape(k)
		if err != nil || k != key {
			continue
		}
		if v, err = url.QueryUnescape(v); err == nil {
			return v, true
		}
	}
	return "", false
}
