package config

import (
	"errors"
	"strings"
	"testing"
)

// The loader must never panic, and whatever it rejects must be reported as
// configuration errors that name a source.
func FuzzLoad(f *testing.F) {
	for _, seed := range []string{
		"",
		`endpoints = ["10.0.0.1:6443", "[::1]:6443"]`,
		"endpoints = [\n\"a:1\",\n7,\n]\nbind_port = 70000\n[t]\n",
		`health_interval = "1s"` + "\nhealth_timeout = \"2s\"\n",
		"a.b = 1\nlog_level = \"x\"\nlog_level = \"y\"",
		`endpoints = "10.0.0.1:6443"`,
		"bind_port = 0x1d15\ndial_timeout = \"-1s\"",
		"endpoints = [\"\\u0000:1\"]",
		"= 1",
	} {
		f.Add(seed, "7445", "10.0.0.2:6443")
	}

	f.Fuzz(func(t *testing.T, file, envPort, envEndpoints string) {
		env := map[string]string{"EP_BIND_PORT": envPort, "EP_ENDPOINTS": envEndpoints}

		l, err := Load(Input{
			Flags:     Flags{ConfigFile: ptr("fuzz.toml")},
			LookupEnv: envOf(env),
			ReadFile:  func(string) ([]byte, error) { return []byte(file), nil },
		})
		if l == nil {
			t.Fatal("Load returned no result")
		}

		if err == nil {
			if len(Validate(l.Config, l.Sources)) != 0 {
				t.Fatal("accepted a configuration that does not validate")
			}

			return
		}

		for line := range strings.SplitSeq(err.Error(), "\n") {
			if line == "" {
				t.Fatalf("empty error line in %q", err)
			}
		}

		if !errors.Is(err, ErrInvalid) {
			t.Fatalf("error does not match ErrInvalid: %v", err)
		}
	})
}
