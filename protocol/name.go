package protocol

// ValidName reports whether s is a valid user or room name: 1 to MaxNameLen
// letters, digits, '_', '-' or '.'. Names are case-sensitive.
func ValidName[T ~string | ~[]byte](s T) bool {
	if len(s) == 0 || len(s) > MaxNameLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !nameByte[s[i]] {
			return false
		}
	}
	return true
}

var nameByte = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	t['_'], t['-'], t['.'] = true, true, true
	return t
}()
