package loop

import (
	"net/url"
	"testing"
)

// checkQuery compares query with url.ParseQuery on one raw query.
func checkQuery(t *testing.T, raw string) {
	t.Helper()
	want, _ := url.ParseQuery(raw)
	q := query(raw)
	for _, key := range []string{"name", "room", "dm_since", "token", "", "a b", "x"} {
		if got, w := q.Get(key), want.Get(key); got != w {
			t.Errorf("%q: Get(%q) = %q, url.Values says %q", raw, key, got, w)
		}
		if got, w := q.Has(key), want.Has(key); got != w {
			t.Errorf("%q: Has(%q) = %v, url.Values says %v", raw, key, got, w)
		}
	}
}

func TestQueryMatchesURLValues(t *testing.T) {
	for _, raw := range []string{
		"",
		"name=ann&room=lobby",
		"name=ann&name=bob",
		"room=&name=ann",
		"name",
		"&&name=ann&",
		"name=a%20b&room=x+y",
		"%6Eame=ann",
		"name=bad%zz&name=ann",
		"name=ann;room=x&room=lobby",
		"a+b=1&a%20b=2",
		"dm_since=12&token=a.b.c",
		"=x&name==ann",
	} {
		checkQuery(t, raw)
	}
}

func FuzzQuery(f *testing.F) {
	for _, s := range []string{"name=ann&room=lobby", "name=a%20b;x", "%6Eame=1&&name"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) { checkQuery(t, raw) })
}
