package config

import (
	"cmp"
	"errors"
	"io/fs"
	"os"
	"reflect"
	"slices"
)

// Input is everything a configuration is built from.
type Input struct {
	Flags Flags
	// LookupEnv reads the environment; os.LookupEnv in production.
	LookupEnv func(string) (string, bool)
	// ReadFile reads the configuration file; os.ReadFile in production.
	ReadFile func(string) ([]byte, error)
}

// Loaded is a validated configuration and where each value came from.
type Loaded struct {
	Config  Config
	Sources map[string]Source // by TOML key
	Path    string            // the configuration file that was considered
	Found   bool              // whether it existed

	broken map[string]bool // keys whose value could not be read
}

// Load builds the configuration from defaults, the file, the environment and
// the flags, then validates it. All problems are returned at once, joined;
// each one matches ErrInvalid and names its source.
func Load(in Input) (*Loaded, error) {
	if in.LookupEnv == nil {
		in.LookupEnv = os.LookupEnv
	}

	if in.ReadFile == nil {
		in.ReadFile = os.ReadFile
	}

	l := &Loaded{Config: Default(), Sources: map[string]Source{}, broken: map[string]bool{}}
	for _, s := range Settings() {
		l.Sources[s.Key] = Source{Kind: FromDefault}
	}

	var errs []error

	errs = append(errs, l.applyFile(in)...)
	errs = append(errs, l.applyEnv(in.LookupEnv)...)
	l.applyFlags(&in.Flags)
	errs = append(errs, validate(l.Config, l.Sources, l.broken)...)

	if len(errs) > 0 {
		sortErrors(errs)

		return l, errors.Join(errs...)
	}

	return l, nil
}

// configPath picks the file: --config, then EP_CONFIG, then the default.
// Only the default may be missing.
func configPath(in Input) (path, namedBy string) {
	if in.Flags.ConfigFile != nil {
		return *in.Flags.ConfigFile, "--config"
	}

	if p, ok := in.LookupEnv("EP_CONFIG"); ok && p != "" {
		return p, "EP_CONFIG"
	}

	return DefaultPath, ""
}

func (l *Loaded) applyFile(in Input) []error {
	path, namedBy := configPath(in)
	l.Path = path

	data, err := in.ReadFile(path)

	switch {
	case errors.Is(err, fs.ErrNotExist) && namedBy == "":
		return nil
	case errors.Is(err, fs.ErrNotExist):
		return []error{&FieldError{Source: Source{Kind: FromFlag, Name: namedBy}, Index: -1, Msg: path + ": no such file"}}
	case err != nil:
		return []error{&FieldError{Source: Source{Kind: FromFlag, Name: namedBy}, Index: -1, Msg: err.Error()}}
	}

	l.Found = true

	file, errs := parseFile(path, data)
	for _, fv := range file.values {
		s, ok := SettingByKey(fv.key)
		if !ok {
			errs = append(errs, file.errorAt(fv.line, fv.key, "unknown key"))

			continue
		}

		if err := file.assign(s.value(&l.Config), fv); err != nil {
			errs = append(errs, err)
			l.broken[s.Key] = true

			continue
		}

		l.Sources[s.Key] = Source{Kind: FromFile, Name: path, Line: fv.line, Elems: fv.elemLines()}
	}

	return errs
}

func (l *Loaded) applyEnv(lookup func(string) (string, bool)) []error {
	var errs []error

	for _, s := range Settings() {
		text, ok := lookup(s.Env)
		if !ok {
			continue
		}

		src := Source{Kind: FromEnv, Name: s.Env}
		if err := parseText(s.value(&l.Config), text); err != nil {
			errs = append(errs, &FieldError{Source: src, Key: s.Key, Index: -1, Msg: err.Error()})
			l.broken[s.Key] = true

			continue
		}

		l.Sources[s.Key] = src
	}

	return errs
}

// applyFlags copies the flags that were given. kong has already parsed and
// type-checked them, so nothing can fail here.
func (l *Loaded) applyFlags(f *Flags) {
	for _, s := range Settings() {
		v, ok := s.flagValue(f)
		if !ok {
			continue
		}

		s.value(&l.Config).Set(reflect.ValueOf(v.Interface()))
		l.Sources[s.Key] = Source{Kind: FromFlag, Name: s.Flag}
	}
}

// sortErrors orders errors the way a person fixes them: the file from top to
// bottom, then variables, then flags, then defaults.
func sortErrors(errs []error) {
	rank := func(err error) (SourceKind, int) {
		var fe *FieldError
		if !errors.As(err, &fe) {
			return -1, 0
		}

		order := map[SourceKind]SourceKind{FromFile: 0, FromEnv: 1, FromFlag: 2, FromDefault: 3}

		return order[fe.Source.Kind], fe.Source.Line
	}

	slices.SortStableFunc(errs, func(a, b error) int {
		ka, la := rank(a)
		kb, lb := rank(b)

		return cmp.Or(cmp.Compare(ka, kb), cmp.Compare(la, lb))
	})
}
