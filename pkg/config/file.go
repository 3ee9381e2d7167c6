package config

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"

	"github.com/pelletier/go-toml/v2/unstable"
)

// fileValue is one top-level key of the file, kept with its position so that
// later validation can still point at the line.
type fileValue struct {
	key  string
	line int
	val  tomlValue
}

// tomlValue is a value copied out of the parser, whose nodes are only valid
// until the next expression is parsed.
type tomlValue struct {
	kind  unstable.Kind
	text  string
	line  int
	elems []tomlValue
}

// tomlFile is a parsed configuration file.
type tomlFile struct {
	path   string
	parser *unstable.Parser
	values []fileValue
}

// parseFile parses data and returns its top-level key/values. Syntax errors,
// tables, dotted keys and repeated keys are reported with their line.
func parseFile(path string, data []byte) (*tomlFile, []error) {
	f := &tomlFile{path: path, parser: &unstable.Parser{}}
	f.parser.Reset(data)

	var errs []error

	seen := map[string]int{}

	for f.parser.NextExpression() {
		expr := f.parser.Expression()
		switch expr.Kind {
		case unstable.KeyValue:
			fv, err := f.keyValue(expr)
			if err != nil {
				errs = append(errs, err)

				continue
			}

			if first, dup := seen[fv.key]; dup {
				errs = append(errs, f.errorAt(fv.line, fv.key, fmt.Sprintf("set again (first set on line %d)", first)))

				continue
			}

			seen[fv.key] = fv.line
			f.values = append(f.values, fv)
		case unstable.Table, unstable.ArrayTable:
			errs = append(errs, f.errorAt(f.keyLine(expr), joinKey(expr.Key()), "tables are not supported: every setting is a top-level key"))
		}
	}

	if err := f.parser.Error(); err != nil {
		errs = append(errs, f.syntaxError(err))
	}

	return f, errs
}

func (f *tomlFile) keyValue(expr *unstable.Node) (fileValue, error) {
	key := joinKey(expr.Key())
	line := f.keyLine(expr)

	if strings.Contains(key, ".") {
		return fileValue{}, f.errorAt(line, key, "dotted keys are not supported: every setting is a top-level key")
	}

	return fileValue{key: key, line: line, val: f.copyValue(expr.Value())}, nil
}

func (f *tomlFile) copyValue(n *unstable.Node) tomlValue {
	v := tomlValue{kind: n.Kind, text: string(n.Data), line: f.line(n.Raw)}

	if n.Kind == unstable.Array {
		for it := n.Children(); it.Next(); {
			v.elems = append(v.elems, f.copyValue(it.Node()))
		}
	}

	return v
}

// keyLine is the line of the key itself; a KeyValue node has no range of
// its own.
func (f *tomlFile) keyLine(expr *unstable.Node) int {
	it := expr.Key()
	if it.Next() {
		return f.line(it.Node().Raw)
	}

	return 0
}

func (f *tomlFile) line(r unstable.Range) int {
	if r.Length == 0 && r.Offset == 0 {
		return 0
	}

	return f.parser.Shape(r).Start.Line
}

func (f *tomlFile) syntaxError(err error) error {
	var perr *unstable.ParserError

	line := 0
	if errors.As(err, &perr) && len(perr.Highlight) > 0 {
		line = f.parser.Shape(f.parser.Range(perr.Highlight)).Start.Line
	}

	if line == 0 {
		// The parser highlights nothing at the end of input.
		line = bytes.Count(f.parser.Data(), []byte{'\n'}) + 1
	}

	return &FieldError{Source: Source{Kind: FromFile, Name: f.path, Line: line}, Key: "syntax", Index: -1, Msg: err.Error()}
}

func (f *tomlFile) errorAt(line int, key, msg string) error {
	return &FieldError{Source: Source{Kind: FromFile, Name: f.path, Line: line}, Key: key, Index: -1, Msg: msg}
}

func joinKey(it unstable.Iterator) string {
	var parts []string
	for it.Next() {
		parts = append(parts, string(it.Node().Data))
	}

	return strings.Join(parts, ".")
}

// assign stores the file value into dst, converting TOML types to the
// setting's Go type.
func (f *tomlFile) assign(dst reflect.Value, fv fileValue) error {
	if dst.Kind() == reflect.Slice {
		return f.assignList(dst, fv)
	}

	if err := assignScalar(dst, fv.val); err != nil {
		return f.errorAt(fv.line, fv.key, err.Error())
	}

	return nil
}

func (f *tomlFile) assignList(dst reflect.Value, fv fileValue) error {
	if fv.val.kind != unstable.Array {
		return f.errorAt(fv.line, fv.key, fmt.Sprintf("expected an array of strings, got %s", kindName(fv.val.kind)))
	}

	var (
		items []string
		errs  []error
	)

	for i, e := range fv.val.elems {
		if e.kind != unstable.String {
			errs = append(errs, &FieldError{
				Source: Source{Kind: FromFile, Name: f.path, Line: e.line},
				Key:    fv.key, Index: i,
				Msg: fmt.Sprintf("expected a string, got %s", kindName(e.kind)),
			})

			continue
		}

		items = append(items, e.text)
	}

	if len(errs) > 0 {
		return errors.Join(errs...)
	}

	dst.Set(reflect.ValueOf(items))

	return nil
}

func assignScalar(dst reflect.Value, v tomlValue) error {
	want := map[reflect.Kind]unstable.Kind{reflect.String: unstable.String, reflect.Int: unstable.Integer, reflect.Bool: unstable.Bool}[dst.Kind()]
	if dst.Type() == durationType {
		want = unstable.String
	}

	if v.kind != want {
		return fmt.Errorf("expected %s, got %s", typeName(dst), kindName(v.kind))
	}

	text := v.text
	if dst.Kind() == reflect.Int {
		v, err := strconv.ParseInt(strings.ReplaceAll(text, "_", ""), 0, 64)
		if err != nil {
			return fmt.Errorf("%s is not an integer", text)
		}

		dst.SetInt(v)

		return nil
	}

	return parseText(dst, text)
}

func typeName(v reflect.Value) string {
	switch {
	case v.Type() == durationType:
		return `a duration string such as "5s"`
	case v.Kind() == reflect.Int:
		return "an integer"
	case v.Kind() == reflect.Bool:
		return "a boolean"
	default:
		return "a string"
	}
}

func kindName(k unstable.Kind) string {
	switch k {
	case unstable.String:
		return "a string"
	case unstable.Integer:
		return "an integer"
	case unstable.Float:
		return "a float"
	case unstable.Bool:
		return "a boolean"
	case unstable.Array:
		return "an array"
	case unstable.InlineTable:
		return "a table"
	default:
		return "a date or time"
	}
}

func (fv fileValue) elemLines() []int {
	lines := make([]int, len(fv.val.elems))
	for i, e := range fv.val.elems {
		lines[i] = e.line
	}

	return lines
}
