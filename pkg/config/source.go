package config

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode"
)

// SourceKind says which layer a value came from.
type SourceKind int

// The layers, from lowest to highest precedence.
const (
	FromDefault SourceKind = iota
	FromFile
	FromEnv
	FromFlag
)

// Source is where a value came from: a file and line, a variable or a flag.
type Source struct {
	Kind SourceKind
	Name string // file path, variable or flag
	Line int    // for FromFile
	// Elems holds the line of each list element, for FromFile lists.
	Elems []int
}

// elem returns the source of list element i: its own line in a file.
func (s Source) elem(i int) Source {
	if s.Kind == FromFile && i >= 0 && i < len(s.Elems) {
		s.Line = s.Elems[i]
	}

	return s
}

func (s Source) String() string {
	switch s.Kind {
	case FromFile:
		return s.Name + ":" + strconv.Itoa(s.Line)
	case FromEnv, FromFlag:
		return s.Name
	default:
		return "default"
	}
}

// ErrInvalid marks every configuration error, so callers can tell a bad
// configuration (exit code 1, keep the old one on reload) from other failures.
var ErrInvalid = errors.New("invalid configuration")

// FieldError is one problem with one value, named after where the value came
// from: "config.toml:7: endpoints[1]: ...", "EP_BIND_PORT: ...", "--health-timeout: ...".
type FieldError struct {
	Source Source
	Key    string // TOML key, for file and default sources
	Index  int    // list element, or -1
	Msg    string
}

func (e *FieldError) Error() string {
	return printable(e.text())
}

// printable escapes control characters, so that each error stays on one
// line whatever the input held.
func printable(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return '?'
		}

		return r
	}, s)
}

func (e *FieldError) text() string {
	elem := ""
	if e.Index >= 0 {
		elem = "[" + strconv.Itoa(e.Index) + "]"
	}

	switch e.Source.Kind {
	case FromFile:
		return fmt.Sprintf("%s: %s%s: %s", e.Source, e.Key, elem, e.Msg)
	case FromEnv, FromFlag:
		return fmt.Sprintf("%s%s: %s", e.Source.Name, elem, e.Msg)
	default:
		return fmt.Sprintf("%s%s (default): %s", e.Key, elem, e.Msg)
	}
}

// Is makes every FieldError match ErrInvalid.
func (e *FieldError) Is(target error) bool { return target == ErrInvalid }
