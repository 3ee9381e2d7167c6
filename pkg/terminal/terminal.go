// Package terminal makes text from elsewhere safe to print on a terminal:
// what the health port answers (any process can hold it) and what a
// certificate or an API server says. Escape sequences in such text could
// rewrite the screen, the window title or the clipboard of whoever runs
// `extractedprism status` or `doctor`.
package terminal

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Escape returns s with everything a terminal could act on made visible:
// invalid UTF-8 bytes, C0 controls and DEL as \xNN (\n, \r and \t as
// such), C1 controls and bidirectional formatting characters as \uNNNN.
// Other text, non-ASCII included, is unchanged.
func Escape(s string) string {
	if clean(s) {
		return s
	}

	var b strings.Builder

	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])

		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\x%02x`, r)
		case unicode.IsControl(r) || isBidi(r):
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteRune(r)
		}

		i += size
	}

	return b.String()
}

func clean(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f {
			return false
		}
	}

	return true
}

// isBidi reports the bidirectional formatting characters, which reorder
// how the text around them is shown.
func isBidi(r rune) bool {
	switch {
	case r == 0x061c, r == 0x200e, r == 0x200f:
		return true
	case r >= 0x202a && r <= 0x202e:
		return true
	case r >= 0x2066 && r <= 0x2069:
		return true
	}

	return false
}

// EscapeJSON re-encodes a JSON document, indented by two spaces, so that
// it is safe to print: the encoder escapes C0 controls and replaces
// invalid UTF-8; DEL, C1 controls and bidirectional formatting characters,
// which it leaves as they are, are escaped as \uNNNN. The document means
// the same. Input that is not JSON is an error.
func EscapeJSON(data []byte) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()

	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("not JSON: %w", err)
	}

	var buf bytes.Buffer

	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")

	if err := enc.Encode(v); err != nil {
		return nil, fmt.Errorf("re-encoding JSON: %w", err)
	}

	// Every such rune is inside a string: the structure is ASCII.
	var b bytes.Buffer

	for _, r := range buf.String() {
		if r == 0x7f || (r >= 0x80 && unicode.IsControl(r)) || isBidi(r) {
			fmt.Fprintf(&b, `\u%04x`, r)

			continue
		}

		b.WriteRune(r)
	}

	return b.Bytes(), nil
}

// Line is text for a one-line field such as systemd's STATUS=: its first
// line, with how many more there were, escaped, at most max bytes (then
// cut, with "...").
func Line(text string, max int) string {
	first, rest, more := strings.Cut(text, "\n")
	if more {
		first += fmt.Sprintf(" (and %d more)", strings.Count(rest, "\n")+1)
	}

	first = Escape(first)
	if len(first) > max {
		cut := max
		for cut > 0 && !utf8.RuneStart(first[cut]) {
			cut--
		}

		first = first[:cut] + "..."
	}

	return first
}
