package config

import (
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// Setting describes one configuration value under its three names.
type Setting struct {
	Key   string // TOML key: bind_port
	Flag  string // command-line flag: --bind-port
	Env   string // environment variable: EP_BIND_PORT
	Help  string
	field string // Go field name, shared by Config and Flags
}

// Settings lists every setting in declaration order. It is derived from Flags
// so that the flags, the variables, the file keys and the reference docs can
// never disagree.
func Settings() []Setting {
	t := reflect.TypeFor[Flags]()
	out := make([]Setting, 0, t.NumField())

	for i := range t.NumField() {
		f := t.Field(i)
		if f.Tag.Get("setting") == "-" {
			continue
		}

		name := f.Tag.Get("name")
		key := strings.ReplaceAll(name, "-", "_")
		out = append(out, Setting{
			Key:   key,
			Flag:  "--" + name,
			Env:   "EP_" + strings.ToUpper(key),
			Help:  strings.ReplaceAll(f.Tag.Get("help"), "$$", "$"), // kong's escape
			field: f.Name,
		})
	}

	return out
}

// SettingByKey finds a setting by its TOML key.
func SettingByKey(key string) (Setting, bool) {
	return findSetting(func(s Setting) bool { return s.Key == key })
}

// SettingByFlag finds a setting by its flag, with the leading dashes.
func SettingByFlag(flag string) (Setting, bool) {
	return findSetting(func(s Setting) bool { return s.Flag == flag })
}

func findSetting(match func(Setting) bool) (Setting, bool) {
	for _, s := range Settings() {
		if match(s) {
			return s, true
		}
	}

	return Setting{}, false
}

// value returns the addressable Config field of the setting.
func (s Setting) value(c *Config) reflect.Value {
	return reflect.ValueOf(c).Elem().FieldByName(s.field)
}

// flagValue returns the flag's value and whether the flag was given.
func (s Setting) flagValue(f *Flags) (reflect.Value, bool) {
	v := reflect.ValueOf(f).Elem().FieldByName(s.field)
	if v.IsNil() {
		return reflect.Value{}, false
	}

	return v.Elem(), true
}

// Format renders the setting's value in c as a TOML value.
func (s Setting) Format(c *Config) string {
	return formatValue(s.value(c).Interface())
}

func formatValue(v any) string {
	switch v := v.(type) {
	case string:
		return strconv.Quote(v)
	case time.Duration:
		return strconv.Quote(v.String())
	case []string:
		quoted := make([]string, len(v))
		for i, s := range v {
			quoted[i] = strconv.Quote(s)
		}

		return "[" + strings.Join(quoted, ", ") + "]"
	default:
		return fmt.Sprint(v)
	}
}

var durationType = reflect.TypeFor[time.Duration]()

// parseText converts the text of an environment variable into the type of
// dst and stores it. Lists are comma-separated, as on the command line.
func parseText(dst reflect.Value, text string) error {
	switch {
	case dst.Type() == durationType:
		d, err := time.ParseDuration(strings.TrimSpace(text))
		if err != nil {
			return fmt.Errorf("%q is not a duration (use e.g. 500ms, 5s, 1m)", text)
		}

		dst.SetInt(int64(d))
	case dst.Kind() == reflect.Int:
		n, err := strconv.Atoi(strings.TrimSpace(text))
		if err != nil {
			return fmt.Errorf("%q is not an integer", text)
		}

		dst.SetInt(int64(n))
	case dst.Kind() == reflect.Bool:
		b, err := strconv.ParseBool(strings.TrimSpace(text))
		if err != nil {
			return fmt.Errorf("%q is not a boolean (use true or false)", text)
		}

		dst.SetBool(b)
	case dst.Kind() == reflect.Slice:
		dst.Set(reflect.ValueOf(splitList(text)))
	default:
		dst.SetString(text)
	}

	return nil
}

func splitList(text string) []string {
	var out []string

	for item := range strings.SplitSeq(text, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}

	return out
}

// Copy sets the setting in dst to its value in src.
func (s Setting) Copy(dst, src *Config) {
	s.value(dst).Set(s.value(src))
}
