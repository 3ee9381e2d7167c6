package config

import (
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

// The shipped config.toml lists every setting, commented out with its real
// default, so that it can never drift from the code.
func TestShippedConfigListsEveryDefault(t *testing.T) {
	t.Parallel()

	data, err := os.ReadFile("../../etc/extractedprism/config.toml")
	if err != nil {
		t.Fatal(err)
	}

	commented := regexp.MustCompile(`(?m)^#([a-z_]+ = .*)$`)

	var uncommented []string

	for _, m := range commented.FindAllStringSubmatch(string(data), -1) {
		uncommented = append(uncommented, m[1])
	}

	path := writeConfig(t, strings.Join(uncommented, "\n"))

	l, err := Load(Input{Flags: Flags{ConfigFile: &path}, LookupEnv: envOf(nil)})
	if err != nil {
		t.Fatalf("the shipped examples do not load: %v", err)
	}

	for _, s := range Settings() {
		if l.Sources[s.Key].Kind != FromFile {
			t.Errorf("%s is missing from the shipped config.toml", s.Key)
		}
	}

	want := Default()
	want.Endpoints = l.Config.Endpoints // the one setting without a default

	if !reflect.DeepEqual(l.Config, want) {
		t.Errorf("shipped values differ from the defaults:\n got %+v\nwant %+v", l.Config, want)
	}

	// As shipped (all commented out), only the endpoints are missing.
	path = writeConfig(t, string(data))

	_, err = Load(Input{Flags: Flags{ConfigFile: &path}, LookupEnv: envOf(nil)})
	if err == nil || !strings.Contains(err.Error(), "endpoints (default): at least one") || strings.Count(err.Error(), "\n") != 0 {
		t.Errorf("shipped file as is: %v, want only the endpoints error", err)
	}
}
