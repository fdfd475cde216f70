package protocol_test

import (
	"strings"
	"testing"

	"nbchat/protocol"
)

func TestValidName(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want bool
	}{
		{"empty", "", false},
		{"one letter", "a", true},
		{"one digit", "7", true},
		{"one underscore", "_", true},
		{"one dash", "-", true},
		{"one dot", ".", true},
		{"max length", strings.Repeat("n", protocol.MaxNameLen), true},
		{"one over max", strings.Repeat("n", protocol.MaxNameLen+1), false},
		{"far over max", strings.Repeat("n", 1000), false},
		{"lower case", "abcdefghijklmnopqrstuvwxyz", true},
		{"upper case", "ABCDEFGHIJKLMNOPQRSTUVWXYZ", true},
		{"digits", "0123456789", true},
		{"mixed", "Alice_B-2.0", true},
		{"dots only", "..", true},
		{"slash", "a/b", false},
		{"backslash", `a\b`, false},
		{"space", "a b", false},
		{"leading space", " a", false},
		{"trailing newline", "a\n", false},
		{"NUL", "a\x00", false},
		{"tab", "\t", false},
		{"at", "a@b", false},
		{"colon", "a:b", false},
		{"plus", "a+b", false},
		{"quote", `a"b`, false},
		{"hash", "#room", false},
		{"DEL", "a\x7f", false},
		{"latin", "café", false},
		{"emoji", "😀", false},
		{"invalid UTF-8", "a\xff", false},
		{"bytes around the classes", "/:@[`{", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := protocol.ValidName(tt.in); got != tt.want {
				t.Errorf("ValidName(%q) = %v, want %v", tt.in, got, tt.want)
			}
			if got := protocol.ValidName([]byte(tt.in)); got != tt.want {
				t.Errorf("ValidName([]byte(%q)) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

// TestValidNameEveryByte checks each byte value alone against the allowed
// classes: ASCII letters, digits, '_', '-' and '.'.
func TestValidNameEveryByte(t *testing.T) {
	for c := range 256 {
		b := byte(c)
		want := b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '_' || b == '-' || b == '.'
		if got := protocol.ValidName([]byte{b}); got != want {
			t.Errorf("ValidName(%q) = %v, want %v", b, got, want)
		}
		if got := protocol.ValidName("x" + string([]byte{b}) + "y"); got != want {
			t.Errorf("ValidName(%q) = %v, want %v", "x"+string([]byte{b})+"y", got, want)
		}
	}
}

func TestValidNameNoAlloc(t *testing.T) {
	s, b := "some.room_name-1", []byte("some.room_name-1")
	if allocs := testing.AllocsPerRun(100, func() {
		if !protocol.ValidName(s) || !protocol.ValidName(b) {
			t.Fatal("not valid")
		}
	}); allocs != 0 {
		t.Errorf("ValidName allocates %v times per run", allocs)
	}
}
