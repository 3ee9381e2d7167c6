package terminal

import (
	"encoding/json"
	"testing"
	"unicode"
	"unicode/utf8"
)

// safe reports whether a terminal could act on nothing in s.
func safe(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}

	for _, r := range s {
		if unicode.IsControl(r) || isBidi(r) {
			return false
		}
	}

	return true
}

func TestEscape(t *testing.T) {
	t.Parallel()

	for in, want := range map[string]string{
		"10.0.0.1:6443":            "10.0.0.1:6443",
		"ünïcode ✓ 日本":             "ünïcode ✓ 日本",
		"\x1b]0;pwned\x07":         `\x1b]0;pwned\x07`,
		"a\nb\tc\rd":               `a\nb\tc\rd`,
		"\u009b31m":                `\u009b31m`,
		"\x7f":                     `\x7f`,
		"bad \xff\xfe utf-8":       `bad \xff\xfe utf-8`,
		"rtl \u202eevil\u202c end": `rtl \u202eevil\u202c end`,
		`back\slash`:               `back\slash`,
	} {
		got := Escape(in)
		if got != want {
			t.Errorf("Escape(%q) = %q, want %q", in, got, want)
		}

		if !safe(got) {
			t.Errorf("Escape(%q) = %q is not safe", in, got)
		}
	}
}

func TestEscapeJSON(t *testing.T) {
	t.Parallel()

	in := []byte(`{"a": "x\u001b[2Jy", "b": ["\u009b", "ok \u202e", 1.5e3], "c": {"d": null, "e": "del \u007f"}}`)

	out, err := EscapeJSON(in)
	if err != nil {
		t.Fatal(err)
	}

	if !safe(string(out)) && !safeExceptNewlines(string(out)) {
		t.Fatalf("not safe: %q", out)
	}

	var before, after any
	if err := json.Unmarshal(in, &before); err != nil {
		t.Fatal(err)
	}

	if err := json.Unmarshal(out, &after); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, out)
	}

	b1, _ := json.Marshal(before)
	b2, _ := json.Marshal(after)

	if string(b1) != string(b2) {
		t.Fatalf("the document changed:\n%s\n%s", b1, b2)
	}

	if _, err := EscapeJSON([]byte("not json \x1b[2J")); err == nil {
		t.Fatal("invalid JSON accepted")
	}
}

func safeExceptNewlines(s string) bool {
	for _, r := range s {
		if r == '\n' {
			continue
		}

		if unicode.IsControl(r) || isBidi(r) || r == utf8.RuneError {
			return false
		}
	}

	return true
}

func TestLine(t *testing.T) {
	t.Parallel()

	for _, tc := range []struct {
		in   string
		max  int
		want string
	}{
		{"one", 10, "one"},
		{"a\nb\nc", 100, "a (and 2 more)"},
		{"x\x1b[2J\ny", 100, `x\x1b[2J (and 1 more)`},
		{"abcdef", 3, "abc..."},
		{"日本語", 4, "日..."}, // never cut inside a rune
	} {
		if got := Line(tc.in, tc.max); got != tc.want {
			t.Errorf("Line(%q, %d) = %q, want %q", tc.in, tc.max, got, tc.want)
		}
	}
}
