package logging

import (
	"bytes"
	"strings"
	"testing"
)

func TestFormatsAndLevels(t *testing.T) {
	t.Parallel()

	for _, tc := range []struct {
		opts      Options
		want, not []string
	}{
		{Options{Level: "info", Format: "json"}, []string{`"level":"info"`, `"msg":"hello"`, `"ts":`}, []string{"debug line"}},
		{Options{Level: "debug", Format: "console"}, []string{"INFO\thello", "debug line"}, nil},
		// Under journald the journal stamps lines itself.
		{Options{Level: "info", Format: "console", Journald: true}, []string{"INFO\thello"}, []string{"20"}},
	} {
		var buf bytes.Buffer

		log, _, err := New(&buf, tc.opts)
		if err != nil {
			t.Fatal(err)
		}

		log.Info("hello")
		log.Debug("debug line")
		Quieter(log).Info("library chatter")

		out := buf.String()
		for _, w := range tc.want {
			if !strings.Contains(out, w) {
				t.Errorf("%+v: output lacks %q:\n%s", tc.opts, w, out)
			}
		}

		for _, n := range append(tc.not, "library chatter") {
			if strings.Contains(out, n) {
				t.Errorf("%+v: output has %q:\n%s", tc.opts, n, out)
			}
		}
	}

	if _, _, err := New(&bytes.Buffer{}, Options{Level: "info", Format: "xml"}); err == nil {
		t.Error("xml format accepted")
	}
}
