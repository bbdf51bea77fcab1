// Command latprobe measures round-trip latency through lowlat's socket API.
//
//	latprobe                      same as latprobe run
//	latprobe run [flags]          echo server and client in one process, on 127.0.0.1
//	latprobe server [flags]       an echo server; --addr again serves several addresses from one thread
//	latprobe client --peer H:P    the measuring side, against a latprobe server; --peer again measures several
//
// Run "latprobe help" for the list of commands, and "latprobe CMD -h" for a
// command's flags. A mistake on the command line prints one line naming the
// flag and exits with status 2; a failure while running exits with 1.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/lowlat/lowlat/bypass"
	"github.com/lowlat/lowlat/internal/cli"
	"github.com/lowlat/lowlat/latency"
)

func main() {
	ctx, stop := signalContext()
	code := latprobe(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// signalContext is canceled by SIGINT, SIGTERM or SIGHUP (a closed
// terminal), so that a command undoes what it changed on the host
// (containers, namespaces, sysctls) before it exits. SIGPIPE is ignored: a
// closed stdout pipe (latprobe suite | head) makes writes fail with EPIPE
// instead of killing the process in the middle of a run.
func signalContext() (context.Context, context.CancelFunc) {
	signal.Ignore(syscall.SIGPIPE)
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
}

// command is one subcommand. run returns a usageError for mistakes on the
// command line (exit status 2) and any other error for failures (status 1).
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

// latprobe runs the command args name and returns the exit status.
func latprobe(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	name := "run"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		name, args = args[0], args[1:]
	}
	if name == "help" {
		usage(stdout)
		return 0
	}
	cmd := lookup(name)
	if cmd == nil {
		fmt.Fprintf(stderr, "latprobe: unknown command %s (have %s)\n", cli.Quote(name), strings.Join(commandNames(), ", "))
		return 2
	}
	err := checkEnv(args)
	if err == nil {
		err = cmd.run(ctx, args, stdout, stderr)
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	}
	fmt.Fprintf(stderr, "latprobe %s: %s\n", cmd.name, cli.Line(err.Error()))
	var ue usageError
	if errors.As(err, &ue) {
		return 2
	}
	return 1
}

func lookup(name string) *command {
	for i := range commands {
		if commands[i].name == name {
			return &commands[i]
		}
	}
	return nil
}

func commandNames() []string {
	var names []string
	for _, c := range commands {
		names = append(names, c.name)
	}
	return names
}

func usage(w io.Writer) {
	fmt.Fprint(w, "latprobe measures round-trip latency through lowlat's socket API.\n\nUsage:\n  latprobe [COMMAND] [FLAGS]\n\nCommands:\n")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprint(w, "  help       this text\n\nWith no command, latprobe runs \"run\". \"latprobe COMMAND -h\" lists a command's flags.\n")
	fmt.Fprint(w, "\nEnvironment (flags given on the command line win):\n", bypass.EnvHelp())
}

// oneLine folds a multi-line error (such as auto selection's list of
// backends that failed) onto one line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", "; ")), " ")
}

// usageError is a mistake on the command line: exit status 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

// parseFlags parses args into fs. -h prints the flags to stdout and returns
// flag.ErrHelp; any other mistake becomes a one-line usageError naming the
// flag (see cli.ParseFlags: --name, a bounded quote of the value, negative
// durations refused). Positional arguments are refused.
func parseFlags(fs *flag.FlagSet, args []string, stdout io.Writer) error {
	if err := cli.ParseFlags(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(stdout, "Usage of latprobe %s:\n", fs.Name())
			fs.SetOutput(stdout)
			fs.PrintDefaults()
			return flag.ErrHelp
		}
		return usageError{err.Error()}
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %s (flags start with --)", cli.Quote(fs.Arg(0)))
	}
	return nil
}

// checkEnv checks the LOWLAT_* variables every command may read (itself,
// or the latprobe it starts), so that a malformed one is a usage error
// named by its variable whatever the command. A request for help skips it.
func checkEnv(args []string) error {
	for _, a := range args {
		if a == "--" {
			break
		}
		if a == "-h" || a == "-help" || a == "--h" || a == "--help" {
			return nil
		}
	}
	if _, err := bypass.OptionsFromEnv(bypass.Options{}); err != nil {
		return usageError{err.Error()}
	}
	if err := latency.CheckClockEnv(nil); err != nil {
		return usageError{err.Error()}
	}
	return nil
}

// parseOnlyKey marks a context whose command is to stop once its command
// line is checked.
type parseOnlyKey struct{}

// parseOnly returns a context under which every command parses and checks
// its command line and returns before it does anything (the fuzz test's
// way to reach every command's parsing without running it).
func parseOnly(ctx context.Context) context.Context {
	return context.WithValue(ctx, parseOnlyKey{}, true)
}

// parsedOnly reports whether ctx is parseOnly's: the command returns nil
// right after checking its command line.
func parsedOnly(ctx context.Context) bool { return ctx.Value(parseOnlyKey{}) != nil }
