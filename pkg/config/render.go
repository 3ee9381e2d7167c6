package config

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// WriteEffective prints the configuration as a TOML document, each value
// followed by a comment saying where it came from. The output is itself a
// valid configuration file.
func (l *Loaded) WriteEffective(w io.Writer) error {
	file := l.Path
	if !l.Found {
		file += " (not found, defaults used)"
	}

	if _, err := fmt.Fprintf(w, "# effective configuration; file: %s\n", file); err != nil {
		return fmt.Errorf("writing configuration: %w", err)
	}

	tw := tabwriter.NewWriter(w, 0, 4, 1, ' ', 0)
	for _, s := range Settings() {
		fmt.Fprintf(tw, "%s = %s\t# %s\n", s.Key, s.Format(&l.Config), l.Sources[s.Key])
	}

	if err := tw.Flush(); err != nil {
		return fmt.Errorf("writing configuration: %w", err)
	}

	return nil
}

// Reference renders the settings reference as a Markdown table, built from
// the same source as the flags.
func Reference() string {
	var b strings.Builder

	d := Default()

	b.WriteString("| TOML key | Flag | Environment | Default | Description |\n")
	b.WriteString("| --- | --- | --- | --- | --- |\n")

	for _, s := range Settings() {
		def := s.Format(&d)
		if def == "[]" {
			def = "(required)"
		}

		fmt.Fprintf(&b, "| `%s` | `%s` | `%s` | `%s` | %s |\n", s.Key, s.Flag, s.Env, def, s.Help)
	}

	return b.String()
}
