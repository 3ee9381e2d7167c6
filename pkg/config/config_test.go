package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func ptr[T any](v T) *T { return &v }

// writeConfig writes a real file and returns its path.
func writeConfig(t *testing.T, text string) string {
	t.Helper()

	path := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}

	return path
}

func envOf(vars map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := vars[k]

		return v, ok
	}
}

func TestPrecedence(t *testing.T) {
	t.Parallel()

	// Every combination of file, environment and flag setting bind_port.
	for mask := range 8 {
		inFile, inEnv, inFlag := mask&1 != 0, mask&2 != 0, mask&4 != 0

		text := "endpoints = [\"10.0.0.1:6443\"]\n"
		if inFile {
			text += "bind_port = 1001\n"
		}

		env := map[string]string{}
		if inEnv {
			env["EP_BIND_PORT"] = "1002"
		}

		flags := Flags{ConfigFile: ptr(writeConfig(t, text))}
		if inFlag {
			flags.BindPort = ptr(1003)
		}

		l, err := Load(Input{Flags: flags, LookupEnv: envOf(env)})
		if err != nil {
			t.Fatalf("mask %03b: %v", mask, err)
		}

		wantPort, wantSrc := 7445, "default"

		switch {
		case inFlag:
			wantPort, wantSrc = 1003, "--bind-port"
		case inEnv:
			wantPort, wantSrc = 1002, "EP_BIND_PORT"
		case inFile:
			wantPort, wantSrc = 1001, *flags.ConfigFile+":2"
		}

		if l.Config.BindPort != wantPort || l.Sources["bind_port"].String() != wantSrc {
			t.Errorf("file=%v env=%v flag=%v: bind_port %d from %s, want %d from %s",
				inFile, inEnv, inFlag, l.Config.BindPort, l.Sources["bind_port"], wantPort, wantSrc)
		}
	}
}

func TestEverySettingFromEveryLayer(t *testing.T) {
	t.Parallel()

	file := writeConfig(t, `
bind_address = "127.0.0.2"
bind_port = 1
health_address = "::1"
health_port = 2
link_local_address = "169.254.7.45"
reuse_port = false
endpoints = ["a.example:6443", "[fd00::1]:6443"]
health_interval = "7s"
health_timeout = "1s"
dial_timeout = "500ms"
health_check = "tcp"
health_path = "/livez"
health_ca_file = "/etc/ca.pem"
health_insecure_skip_verify = true
health_fall = 3
health_rise = 4
dial_head_start = "50ms"
reset_on_failure = false
keep_alive_period = "0s"
tcp_user_timeout = "1m"
drain_timeout = "9s"
max_connections = 7
enable_discovery = false
kubeconfig = "/etc/k.conf"
tls_server_name = "kubernetes"
state_directory = ""
cache_ttl = "1h"
max_discovered = 8
log_level = "debug"
log_format = "json"
`)

	want := Config{
		BindAddress: "127.0.0.2", BindPort: 1, HealthAddress: "::1", HealthPort: 2,
		LinkLocalAddress: "169.254.7.45", ReusePort: false,
		Endpoints:      []string{"a.example:6443", "[fd00::1]:6443"},
		HealthInterval: 7 * time.Second, HealthTimeout: time.Second, DialTimeout: 500 * time.Millisecond,
		HealthCheck: "tcp", HealthPath: "/livez", HealthCAFile: "/etc/ca.pem", HealthInsecure: true, HealthFall: 3, HealthRise: 4,
		DialHeadStart: 50 * time.Millisecond, ResetOnFailure: false,
		KeepAlivePeriod: 0, TCPUserTimeout: time.Minute, DrainTimeout: 9 * time.Second, MaxConnections: 7,
		EnableDiscovery: false, Kubeconfig: "/etc/k.conf", TLSServerName: "kubernetes", StateDirectory: "", CacheTTL: time.Hour, MaxDiscovered: 8,
		LogLevel: "debug", LogFormat: "json",
	}

	l, err := Load(Input{Flags: Flags{ConfigFile: &file}, LookupEnv: envOf(nil)})
	if err != nil {
		t.Fatal(err)
	}

	if !reflect.DeepEqual(l.Config, want) {
		t.Fatalf("from the file:\n got %+v\nwant %+v", l.Config, want)
	}

	// The same values as variables, over a file that sets nothing.
	env := map[string]string{
		"EP_BIND_ADDRESS": "127.0.0.2", "EP_BIND_PORT": "1", "EP_HEALTH_ADDRESS": "::1", "EP_HEALTH_PORT": "2",
		"EP_LINK_LOCAL_ADDRESS": "169.254.7.45", "EP_REUSE_PORT": "false",
		"EP_ENDPOINTS": "a.example:6443, [fd00::1]:6443", "EP_HEALTH_INTERVAL": "7s", "EP_HEALTH_TIMEOUT": "1s",
		"EP_DIAL_TIMEOUT": "500ms", "EP_KEEP_ALIVE_PERIOD": "0s",
		"EP_HEALTH_CHECK": "tcp", "EP_HEALTH_PATH": "/livez", "EP_HEALTH_CA_FILE": "/etc/ca.pem", "EP_HEALTH_INSECURE_SKIP_VERIFY": "true",
		"EP_HEALTH_FALL": "3", "EP_HEALTH_RISE": "4", "EP_DIAL_HEAD_START": "50ms", "EP_RESET_ON_FAILURE": "false", "EP_TCP_USER_TIMEOUT": "1m",
		"EP_DRAIN_TIMEOUT": "9s", "EP_MAX_CONNECTIONS": "7", "EP_ENABLE_DISCOVERY": "false", "EP_LOG_LEVEL": "debug", "EP_LOG_FORMAT": "json",
		"EP_KUBECONFIG": "/etc/k.conf", "EP_TLS_SERVER_NAME": "kubernetes", "EP_STATE_DIRECTORY": "", "EP_CACHE_TTL": "1h", "EP_MAX_DISCOVERED": "8",
		"EP_CONFIG": writeConfig(t, ""),
	}

	l, err = Load(Input{LookupEnv: envOf(env)})
	if err != nil {
		t.Fatal(err)
	}

	if !reflect.DeepEqual(l.Config, want) {
		t.Fatalf("from the environment:\n got %+v\nwant %+v", l.Config, want)
	}

	for _, s := range Settings() {
		if got := l.Sources[s.Key].String(); got != s.Env {
			t.Errorf("%s: source %s, want %s", s.Key, got, s.Env)
		}
	}
}

func TestMissingFile(t *testing.T) {
	t.Parallel()

	missing := filepath.Join(t.TempDir(), "nope.toml")

	// The default path may be missing; everything else comes from the flags.
	l, err := Load(Input{
		Flags:     Flags{Endpoints: &[]string{"10.0.0.1:6443"}},
		LookupEnv: envOf(nil),
		ReadFile:  func(string) ([]byte, error) { return os.ReadFile(missing) },
	})
	if err != nil || l.Found || l.Path != DefaultPath {
		t.Fatalf("missing default file: found=%v path=%s err=%v", l.Found, l.Path, err)
	}

	// A missing file that was named is an error.
	_, err = Load(Input{Flags: Flags{ConfigFile: &missing, Endpoints: &[]string{"10.0.0.1:6443"}}, LookupEnv: envOf(nil)})
	if want := "--config: " + missing + ": no such file"; err == nil || err.Error() != want {
		t.Fatalf("missing named file: %v, want %q", err, want)
	}

	_, err = Load(Input{Flags: Flags{Endpoints: &[]string{"10.0.0.1:6443"}}, LookupEnv: envOf(map[string]string{"EP_CONFIG": missing})})
	if want := "EP_CONFIG: " + missing + ": no such file"; err == nil || err.Error() != want {
		t.Fatalf("missing file from EP_CONFIG: %v, want %q", err, want)
	}
}

func TestErrors(t *testing.T) {
	t.Parallel()

	const ok = `endpoints = ["10.0.0.1:6443"]` + "\n"

	for _, tc := range []struct {
		name  string
		file  string
		env   map[string]string
		flags Flags
		want  []string // F stands for the file's path
	}{
		{
			name: "no endpoints", file: "",
			want: []string{"endpoints (default): at least one API server endpoint (host:port) is required"},
		},
		{
			name: "endpoint problems, each on its own line",
			file: "endpoints = [\n  \"10.0.0.1:6443\",\n  \"10.0.0.1\",\n  \"::1\",\n  \":6443\",\n  \"10.0.0.1:0\",\n  \"[::1]:6443\",\n  \"[0::1]:6443\",\n  \"10.0.0.1:6443\",\n]\n",
			want: []string{
				`F:3: endpoints[1]: "10.0.0.1" has no port`,
				`F:4: endpoints[2]: "::1" is not host:port (IPv6 needs brackets: [::1]:6443)`,
				`F:5: endpoints[3]: ":6443" has no host`,
				`F:6: endpoints[4]: "10.0.0.1:0": port "0" out of range (1-65535)`,
				`F:8: endpoints[6]: "[0::1]:6443" duplicates endpoints[5]`,
				`F:9: endpoints[7]: "10.0.0.1:6443" duplicates endpoints[0]`,
			},
		},
		{
			name: "endpoints that point back at the proxy (127.0.0.1:7445 by default)",
			file: "endpoints = [\n  \"10.0.0.1:6443\",\n  \"127.0.0.1:7445\",\n  \"localhost:7445\",\n  \"0.0.0.0:7445\",\n  \"127.0.0.2:7445\",\n  \"[::1]:7445\",\n  \"127.0.0.1:6443\",\n]\n",
			want: []string{
				`F:3: endpoints[1]: "127.0.0.1:7445" is this proxy's own listener (bind_address 127.0.0.1 from default, bind_port 7445 from default): it would connect to itself`,
				`F:4: endpoints[2]: "localhost:7445" is this proxy's own listener (bind_address 127.0.0.1 from default, bind_port 7445 from default): it would connect to itself`,
				`F:5: endpoints[3]: "0.0.0.0:7445" is this proxy's own listener (bind_address 127.0.0.1 from default, bind_port 7445 from default): it would connect to itself`,
			},
		},
		{
			name: "a wildcard listener is reached on loopback",
			file: "endpoints = [\"127.0.0.9:9000\", \"api.localhost:9000\", \"[::1]:9000\", \"10.0.0.1:9000\"]\nbind_address = \"0.0.0.0\"\n", flags: Flags{BindPort: ptr(9000)},
			want: []string{
				`F:1: endpoints[0]: "127.0.0.9:9000" is this proxy's own listener (bind_address 0.0.0.0 from F:2, bind_port 9000 from --bind-port): it would connect to itself`,
				`F:1: endpoints[1]: "api.localhost:9000" is this proxy's own listener (bind_address 0.0.0.0 from F:2, bind_port 9000 from --bind-port): it would connect to itself`,
			},
		},
		{
			name: "IPv4-mapped IPv6 is IPv4",
			file: "endpoints = [\"10.0.0.1:6443\", \"[::ffff:10.0.0.1]:6443\", \"[::ffff:127.0.0.1]:7445\"]\n",
			want: []string{
				`F:1: endpoints[1]: "[::ffff:10.0.0.1]:6443" duplicates endpoints[0]`,
				`F:1: endpoints[2]: "[::ffff:127.0.0.1]:7445" is this proxy's own listener (bind_address 127.0.0.1 from default, bind_port 7445 from default): it would connect to itself`,
			},
		},
		{
			name: "ports", file: ok + "health_port = 0\n", env: map[string]string{"EP_BIND_PORT": "70000"},
			want: []string{"F:2: health_port: 0 out of range (1-65535)", "EP_BIND_PORT: 70000 out of range (1-65535)"},
		},
		{
			name: "port clash", file: ok + "bind_port = 9000\n", flags: Flags{HealthPort: ptr(9000)},
			want: []string{`--health-port: 9000 clashes with bind_port (127.0.0.1:9000, from F:2)`},
		},
		{
			name: "same port on different addresses is fine", file: ok + "bind_port = 9000\nhealth_port = 9000\nhealth_address = \"127.0.0.2\"\n",
		},
		{
			name: "wildcard clashes", file: ok + "bind_address = \"0.0.0.0\"\nhealth_port = 7445\n",
			want: []string{`F:3: health_port: 7445 clashes with bind_port (0.0.0.0:7445, from default)`},
		},
		{
			name: "addresses", file: ok + "bind_address = \"localhost\"\n", flags: Flags{HealthAddress: ptr("1.2.3")},
			want: []string{`F:2: bind_address: "localhost" is not an IP address`, `--health-address: "1.2.3" is not an IP address`},
		},
		{
			name: "link-local address taken", file: ok, env: map[string]string{"EP_LINK_LOCAL_ADDRESS": "169.254.169.254"},
			want: []string{`EP_LINK_LOCAL_ADDRESS: 169.254.169.254 is taken: cloud instance metadata`},
		},
		{
			name: "link-local address outside 169.254/16", file: ok + "link_local_address = \"10.0.0.9\"\n",
			want: []string{`F:2: link_local_address: 10.0.0.9 is not in 169.254.0.0/16`},
		},
		{
			name: "link-local address that fits", file: ok + "link_local_address = \"169.254.7.45\"\n",
		},
		{
			name: "timeout not under interval", file: ok + "health_interval = \"2s\"\n", flags: Flags{HealthTimeout: ptr(2 * time.Second)},
			want: []string{"--health-timeout: 2s must be less than health_interval (2s, from F:2)"},
		},
		{
			name: "durations", file: ok + "dial_timeout = \"0s\"\ndrain_timeout = \"-1s\"\n", env: map[string]string{"EP_HEALTH_INTERVAL": "soon"},
			want: []string{"F:2: dial_timeout: 0s must be positive", "F:3: drain_timeout: -1s must not be negative", `EP_HEALTH_INTERVAL: "soon" is not a duration (use e.g. 500ms, 5s, 1m)`},
		},
		{
			name: "max_discovered", file: ok + "max_discovered = 0\n", env: map[string]string{"EP_MAX_DISCOVERED": "1025"},
			want: []string{"EP_MAX_DISCOVERED: 1025 out of range (1-1024)"},
		},
		{
			name: "enums", file: ok + "log_level = \"loud\"\n", flags: Flags{LogFormat: ptr("xml")},
			want: []string{`F:2: log_level: "loud" is not one of [debug info warn error]`, `--log-format: "xml" is not one of [console json]`},
		},
		{
			name: "types", file: "endpoints = [\"10.0.0.1:6443\", 7]\nbind_port = \"7445\"\nenable_discovery = \"yes\"\nhealth_interval = 5\n", env: map[string]string{"EP_ENABLE_DISCOVERY": "maybe"},
			want: []string{
				"F:1: endpoints[1]: expected a string, got an integer",
				"F:2: bind_port: expected an integer, got a string",
				"F:3: enable_discovery: expected a boolean, got a string",
				`F:4: health_interval: expected a duration string such as "5s", got an integer`,
				`EP_ENABLE_DISCOVERY: "maybe" is not a boolean (use true or false)`,
			},
		},
		{
			name: "unknown keys, tables, repeats",
			file: ok + "bind_prot = 1\nlog_level = \"info\"\nlog_level = \"warn\"\nfoo.bar = 1\n[discovery]\n",
			want: []string{
				"F:2: bind_prot: unknown key",
				"F:4: log_level: set again (first set on line 3)",
				"F:5: foo.bar: dotted keys are not supported: every setting is a top-level key",
				"F:6: discovery: tables are not supported: every setting is a top-level key",
			},
		},
		{
			name: "syntax", file: ok + "log_level = \"info\n",
			want: []string{"F:2: syntax: basic strings cannot have new lines"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()

			path := writeConfig(t, tc.file)
			tc.flags.ConfigFile = &path

			_, err := Load(Input{Flags: tc.flags, LookupEnv: envOf(tc.env)})

			var got []string
			if err != nil {
				if !errors.Is(err, ErrInvalid) {
					t.Errorf("error does not match ErrInvalid: %v", err)
				}

				got = strings.Split(strings.ReplaceAll(err.Error(), path, "F"), "\n")
			}

			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}

func TestFlagsMatchConfig(t *testing.T) {
	t.Parallel()

	flags, cfg := reflect.TypeFor[Flags](), reflect.TypeFor[Config]()
	settings := Settings()

	if len(settings) != cfg.NumField() {
		t.Fatalf("%d settings in Flags, %d fields in Config", len(settings), cfg.NumField())
	}

	for _, s := range settings {
		cf, ok := cfg.FieldByName(s.field)
		if !ok {
			t.Errorf("Flags.%s has no Config field", s.field)

			continue
		}

		ff, _ := flags.FieldByName(s.field)
		if ff.Type.Elem() != cf.Type {
			t.Errorf("%s: flag type %s, config type %s", s.field, ff.Type.Elem(), cf.Type)
		}

		if s.Help == "" {
			t.Errorf("%s has no help", s.Flag)
		}
	}
}

func TestEffectiveOutputIsAValidConfig(t *testing.T) {
	t.Parallel()

	path := writeConfig(t, "endpoints = [\"10.0.0.1:6443\", \"[::1]:6443\"]\n")

	l, err := Load(Input{Flags: Flags{ConfigFile: &path, DialTimeout: ptr(time.Second)}, LookupEnv: envOf(map[string]string{"EP_LOG_FORMAT": "json"})})
	if err != nil {
		t.Fatal(err)
	}

	var b strings.Builder
	if err := l.WriteEffective(&b); err != nil {
		t.Fatal(err)
	}

	out := b.String()
	for _, want := range []string{
		`endpoints = ["10.0.0.1:6443", "[::1]:6443"] # ` + path + ":1",
		`dial_timeout = "1s"`, "# --dial-timeout",
		`log_format = "json"`, "# EP_LOG_FORMAT",
		`bind_port = 7445`, "# default",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("effective config lacks %q:\n%s", want, out)
		}
	}

	// Read back, it gives the same configuration.
	again, err := Load(Input{Flags: Flags{ConfigFile: ptr(writeConfig(t, out))}, LookupEnv: envOf(nil)})
	if err != nil {
		t.Fatalf("effective output does not load: %v\n%s", err, out)
	}

	if !reflect.DeepEqual(again.Config, l.Config) {
		t.Fatalf("round trip changed the config:\n got %+v\nwant %+v", again.Config, l.Config)
	}
}
