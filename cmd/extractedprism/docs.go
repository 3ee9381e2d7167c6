package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/alecthomas/kong"

	"github.com/lexfrei/extractedprism/pkg/config"
	"github.com/lexfrei/extractedprism/pkg/version"
)

// completionCmd and manCmd render the kong model, so that completions and
// the man page always match the flags.
type completionCmd struct {
	Shell string `arg:"" enum:"bash,zsh,fish" help:"bash, zsh or fish."`
}

func (c *completionCmd) Run(e *env, k *kong.Context) error {
	var b strings.Builder

	switch c.Shell {
	case "fish":
		writeFish(&b, k.Model.Node)
	default:
		if c.Shell == "zsh" {
			b.WriteString("#compdef extractedprism\nautoload -U +X bashcompinit && bashcompinit\n")
		}

		writeBash(&b, k.Model.Node)
	}

	_, err := io.WriteString(e.stdout, b.String())

	return err
}

func commands(app *kong.Node) []*kong.Node {
	var out []*kong.Node

	for _, c := range app.Children {
		if !c.Hidden {
			out = append(out, c)
		}
	}

	return out
}

func flagWords(n *kong.Node) string {
	words := []string{"--help"}

	for _, f := range n.Flags {
		if f.Hidden || f.Name == "help" {
			continue
		}

		words = append(words, "--"+f.Name)
		if f.Tag.Negatable != "" {
			words = append(words, "--no-"+f.Name)
		}
	}

	return strings.Join(words, " ")
}

func writeBash(b *strings.Builder, app *kong.Node) {
	var names []string
	for _, c := range commands(app) {
		names = append(names, c.Name)
	}

	b.WriteString("# bash completion for extractedprism, generated from its command-line model.\n")
	b.WriteString("_extractedprism() {\n\tlocal cur=${COMP_WORDS[COMP_CWORD]} cmd= w opts\n")
	fmt.Fprintf(b, "\tfor w in \"${COMP_WORDS[@]:1:COMP_CWORD-1}\"; do\n\t\tcase $w in %s) cmd=$w ;; esac\n\tdone\n", strings.Join(names, "|"))
	b.WriteString("\tcase $cmd in\n")

	for _, c := range commands(app) {
		words := flagWords(c)
		if len(c.Positional) > 0 && c.Positional[0].Enum != "" {
			words += " " + strings.ReplaceAll(c.Positional[0].Enum, ",", " ")
		}

		fmt.Fprintf(b, "\t%s) opts=%q ;;\n", c.Name, words)
	}

	fmt.Fprintf(b, "\t*) opts=%q ;;\n\tesac\n", strings.Join(names, " ")+" "+flagWords(app.DefaultCmd))
	b.WriteString("\tmapfile -t COMPREPLY < <(compgen -W \"$opts\" -- \"$cur\")\n}\ncomplete -o default -F _extractedprism extractedprism\n")
}

func writeFish(b *strings.Builder, app *kong.Node) {
	b.WriteString("# fish completion for extractedprism, generated from its command-line model.\n")

	for _, c := range commands(app) {
		fmt.Fprintf(b, "complete -c extractedprism -f -n __fish_use_subcommand -a %s -d %s\n", c.Name, fishQuote(c.Help))

		for _, f := range c.Flags {
			if f.Hidden || f.Name == "help" {
				continue
			}

			fmt.Fprintf(b, "complete -c extractedprism -n '__fish_seen_subcommand_from %s' -l %s -d %s\n", c.Name, f.Name, fishQuote(firstSentence(f.Help)))
		}
	}
}

func fishQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `\'`) + "'" }

func firstSentence(s string) string {
	if i := strings.Index(s, ". "); i > 0 {
		return s[:i+1]
	}

	return s
}

type manCmd struct{}

func (manCmd) Run(e *env, k *kong.Context) error {
	_, err := io.WriteString(e.stdout, manPage(k.Model.Node))

	return err
}

// manPage renders section 8 in roff from the kong model and the settings
// table.
func manPage(app *kong.Node) string {
	var b strings.Builder

	line := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }

	line(`.TH EXTRACTEDPRISM 8 "" "extractedprism %s" "System Administration"`, roff(version.Get().Version))
	line(".SH NAME\nextractedprism \\- per\\-node TCP load balancer for the Kubernetes API server")
	line(".SH SYNOPSIS\n.B extractedprism\n[\\fIcommand\\fR] [\\fIflags\\fR]")
	line(".SH DESCRIPTION\n%s", roff("extractedprism gives every Kubernetes node a highly available API server at 127.0.0.1:7445. "+
		"It spreads connections over health-checked API servers, retries a failed dial on the next one, and discovers API servers "+
		"from the kubernetes EndpointSlice. It runs as a socket-activated systemd service or as a DaemonSet."))
	line(".SH COMMANDS")

	for _, c := range commands(app) {
		line(".TP\n.B %s\n%s", roff(c.Name), roff(c.Help))
	}

	line(".SH SETTINGS\nEvery setting is a flag, an environment variable and a key of the configuration file, with precedence flag > environment > file > default.")

	d := config.Default()
	for _, s := range config.Settings() {
		line(".TP\n.BR %s \", \" %s \", \" %s\n%s Default: %s.", roff(s.Flag), roff(s.Env), roff(s.Key), roff(s.Help), roff(s.Format(&d)))
	}

	line(".SH FILES\n.TP\n.I /etc/extractedprism/config.toml\nThe configuration; see \\fBextractedprism check\\-config\\fR.")
	line(".TP\n.I /var/lib/extractedprism/endpoints.json\nThe last discovered upstreams, used at start until discovery answers.")
	line(".SH EXIT STATUS\n0 success; 1 invalid configuration; 2 invalid command line; 3 runtime failure (cannot bind, listener broke).")
	line(".SH SEE ALSO\n.BR systemd.socket (5),\n.BR systemctl (1),\n.BR kubelet (8)")

	return b.String()
}

// roff escapes text for a man page body.
func roff(s string) string {
	s = strings.ReplaceAll(s, `\`, `\e`)
	s = strings.ReplaceAll(s, "-", `\-`)

	if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "'") {
		s = `\&` + s
	}

	return s
}
