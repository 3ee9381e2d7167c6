package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/alecthomas/kong"

	"github.com/lexfrei/extractedprism/pkg/config"
)

// Exit codes.
const (
	exitOK      = 0
	exitConfig  = 1 // the configuration is invalid
	exitUsage   = 2 // the command line is invalid
	exitRuntime = 3 // the daemon failed while running
)

// cli is the kong model. Every command takes the settings flags, so that
// check-config and status see exactly what run would.
type cli struct {
	Run         runCmd         `cmd:"" default:"withargs" help:"Run the load balancer (also what a bare 'extractedprism' does)."`
	CheckConfig checkConfigCmd `cmd:"" help:"Load and validate the configuration, print the effective values and their sources."`
	Status      statusCmd      `cmd:"" help:"Show the upstreams of the local daemon, from its health server."`
	Doctor      doctorCmd      `cmd:"" help:"Check this node for what usually goes wrong, and say how to fix it."`
	LinkLocal   linkLocalCmd   `cmd:"" name:"link-local" help:"Put the link-local address (for pods without host networking) on this node: a dummy interface of its own. Needs CAP_NET_ADMIN."`
	Version     versionCmd     `cmd:"" help:"Print version, commit and Go version."`
	Completion  completionCmd  `cmd:"" help:"Print a shell completion script (bash, zsh or fish)."`
	Man         manCmd         `cmd:"" help:"Print the man page (roff)."`
}

// env carries the process's surroundings into commands, so tests can run
// them in-process.
type env struct {
	stdout, stderr io.Writer
	ctx            context.Context
}

// Main runs the command line and returns the exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	var c cli

	exitCode := -1

	parser, err := kong.New(&c,
		kong.Name("extractedprism"),
		kong.Description("Per-node TCP load balancer for the Kubernetes API server."),
		kong.Vars(config.KongVars()),
		kong.ValueFormatter(helpWithSources),
		kong.Writers(stdout, stderr),
		kong.Exit(func(code int) { exitCode = code }),
	)
	if err != nil {
		fmt.Fprintf(stderr, "extractedprism: %v\n", err)

		return exitUsage
	}

	kctx, err := parser.Parse(args)
	if exitCode >= 0 { // --help
		return exitCode
	}

	if err != nil {
		fmt.Fprintf(stderr, "extractedprism: %v\n", err)

		return exitUsage
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	return exitFor(kctx.Run(&env{stdout: stdout, stderr: stderr, ctx: ctx}), stderr)
}

func exitFor(err error, stderr io.Writer) int {
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, errUnhealthy):
		return exitConfig
	case errors.Is(err, config.ErrInvalid):
		fmt.Fprintln(stderr, "extractedprism: invalid configuration:")

		for line := range strings.SplitSeq(err.Error(), "\n") {
			fmt.Fprintln(stderr, "  "+line)
		}

		return exitConfig
	default:
		fmt.Fprintf(stderr, "extractedprism: %v\n", err)

		return exitRuntime
	}
}

// helpWithSources adds each setting's variable, file key and default to its
// flag's help text, from the same table the loader uses.
func helpWithSources(v *kong.Value) string {
	s, ok := config.SettingByFlag("--" + v.Name)
	if !ok {
		return v.Help
	}

	d := config.Default()

	return fmt.Sprintf("%s ($%s, %s = %s)", v.Help, s.Env, s.Key, s.Format(&d))
}

// load reads the configuration the way run does.
func load(f config.Flags) (*config.Loaded, error) {
	return config.Load(config.Input{Flags: f}) //nolint:wrapcheck // errors name their source already
}
