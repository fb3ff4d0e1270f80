// Command mecha is the per-host multi-runtime: `mecha run` serves the Dapr
// APIs to an app; `mecha version` prints the version.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"syscall"

	"mecha/runtime"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `mecha — a per-host multi-runtime that speaks the Dapr APIs

Usage:
  mecha run --app-id ID [flags] [-- app command...]
  mecha version

Run 'mecha run -h' for the run flags.
`

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "run":
		return runCmd(args[1:], stderr)
	case "version", "--version", "-v":
		fmt.Fprintln(stdout, "mecha", runtime.Version)
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "mecha: unknown command %q\n\n%s", args[0], usage)
	return 2
}

func runCmd(args []string, stderr io.Writer) int {
	cfg := runtime.DefaultConfig()
	fs := flag.NewFlagSet("mecha run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg.BindFlags(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	cfg.Command = fs.Args()
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(stderr, "mecha run: %v\n", err)
		return 2
	}
	log := newLogger(cfg, stderr)
	slog.SetDefault(log)

	rt := runtime.New(cfg, log)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	go func() {
		for s := range sigs {
			// The app gets the same signal; the runtime then drains.
			rt.Signal(s)
			cancel()
		}
	}()
	if err := rt.Run(ctx); err != nil {
		var exitErr *exec.ExitError
		if errors.As(err, &exitErr) {
			log.Info("app exited", "code", exitErr.ExitCode())
			if exitErr.ExitCode() > 0 {
				return exitErr.ExitCode()
			}
			return 1
		}
		// Startup errors name a file and a field: print them plainly.
		fmt.Fprintf(stderr, "mecha run: %v\n", err)
		return 1
	}
	return 0
}

func newLogger(cfg runtime.Config, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.LogLevel))
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler
	if cfg.LogFormat == "json" {
		h = slog.NewJSONHandler(w, opts)
	} else {
		h = slog.NewTextHandler(w, opts)
	}
	return slog.New(h).With("app_id", cfg.AppID)
}
