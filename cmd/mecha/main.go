// Command mecha is the per-host multi-runtime: `mecha run` serves the Dapr
// APIs to an app; `mecha broker` runs the Kafka-compatible broker alone;
// `mecha version` prints the version.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"mecha/broker"
	"mecha/runtime"
)

// reapCommand is the hidden subcommand that reaps an app's process
// group when its runtime dies (runtime.Reap).
const reapCommand = "__reap"

func main() {
	runtime.ReapCommand = reapCommand
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `mecha — a per-host multi-runtime that speaks the Dapr APIs

Usage:
  mecha run --app-id ID [flags] [-- app command...]
  mecha broker [--port 9092] [--data-dir DIR] [flags]
  mecha broker reassign [--from-latest] TOPIC PARTITION BROKER,...
                              move a partition of a running mecha's broker cluster
  mecha stream [--admin host:port] list|status|pause|resume|checkpoint|set ...
  mecha crux [--admin host:port] [-o json] status
                              Crux's members, slots and leaders, as this runtime sees them
  mecha ca create|issue ...   the cluster CA for mutual TLS between runtimes
  mecha keygen                a new --gossip-key
  mecha version

Run 'mecha run -h' or 'mecha broker -h' for the flags.
`

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case reapCommand:
		if len(args) == 3 {
			pgid, _ := strconv.Atoi(args[1])
			parent, _ := strconv.Atoi(args[2])
			if pgid > 1 {
				runtime.Reap(pgid, parent)
			}
		}
		return 0
	case "run":
		return runCmd(args[1:], stderr)
	case "broker":
		if len(args) > 1 && args[1] == "reassign" {
			return reassignCmd(args[2:], stdout, stderr)
		}
		return brokerCmd(args[1:], stderr)
	case "stream":
		return streamCmd(args[1:], stdout, stderr)
	case "crux":
		return cruxCmd(args[1:], stdout, stderr)
	case "ca":
		return caCmd(args[1:], stdout, stderr)
	case "keygen":
		return keygenCmd(stdout)
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
	if code, ok := parseFlags(fs, args, stderr); !ok {
		return code
	}
	cfg.Command = fs.Args()
	cfg.Explicit = map[string]bool{}
	fs.Visit(func(f *flag.Flag) { cfg.Explicit[f.Name] = true })
	var ignored []string
	if cfg.RunFile != "" {
		if len(cfg.Command) > 0 {
			fmt.Fprintln(stderr, "mecha run: -f gives the apps' commands; drop the command after --")
			return 2
		}
		var err error
		if ignored, err = runtime.ApplyRunFile(cfg.RunFile, &cfg); err != nil {
			fmt.Fprintf(stderr, "mecha run: %v\n", err)
			return 2
		}
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(stderr, "mecha run: %v\n", err)
		return 2
	}
	log := newLogger(cfg, stderr)
	slog.SetDefault(log)
	if len(ignored) > 0 {
		log.Info("run template fields mecha does not use", "fields", ignored)
	}

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

// brokerCmd runs the embedded broker standalone until SIGINT or SIGTERM.
func brokerCmd(args []string, stderr io.Writer) int {
	cfg := broker.DefaultConfig()
	home, _ := os.UserHomeDir()
	cfg.DataDir = filepath.Join(home, ".mecha", "data", "broker")
	host, port, logLevel := "127.0.0.1", 9092, "info"
	fs := flag.NewFlagSet("mecha broker", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&port, "port", port, "the Kafka listener port (0 picks a free port)")
	fs.StringVar(&host, "listen-address", host, "the address to listen on")
	fs.StringVar(&cfg.DataDir, "data-dir", cfg.DataDir, "where topics and committed offsets are kept")
	fs.StringVar(&logLevel, "log-level", logLevel, "debug, info, warn or error")
	cfg.BindFlags(fs, "")
	if code, ok := parseFlags(fs, args, stderr); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "mecha broker: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if port < 0 || port > 65535 {
		fmt.Fprintf(stderr, "mecha broker: --port %d is not a port\n", port)
		return 2
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(logLevel)); err != nil {
		fmt.Fprintf(stderr, "mecha broker: --log-level %q is not debug, info, warn or error\n", logLevel)
		return 2
	}
	cfg.Addr = net.JoinHostPort(host, strconv.Itoa(port))
	cfg.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	b, err := broker.Start(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "mecha broker: %v\n", err)
		return 1
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	<-sigs
	signal.Stop(sigs)
	if err := b.Close(); err != nil {
		fmt.Fprintf(stderr, "mecha broker: close: %v\n", err)
		return 1
	}
	return 0
}

const streamUsage = `Usage:
  mecha stream [-o json] list             every job with its metrics (a table, or JSON)
  mecha stream status JOB
  mecha stream pause JOB | resume JOB     stop and restart reading the source
  mecha stream checkpoint JOB             take a checkpoint now
  mecha stream set JOB [--rate N] [--sampling F] [--checkpoints on|off]
  mecha stream gen --topic T (--template FILE | --from-topic SRC) ...
                                          write load to a topic ('mecha stream gen -h')
  mecha stream bench nexmark --query Q --events N [--parallelism P] [--through-broker]
                                          the Nexmark benchmark ('mecha stream bench -h')

Flags (before the command):
  --admin host:port   mecha run's metrics port (default 127.0.0.1:9090)
`

// streamCmd drives the stream control API of a running mecha.
func streamCmd(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "gen" {
		return streamGenCmd(args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "bench" {
		return streamBenchCmd(args[1:], stdout, stderr)
	}
	fs, admin, output := adminFlags("mecha stream", streamUsage, stderr)
	if code, ok := parseFlags(fs, args, stderr); !ok {
		return code
	}
	args = fs.Args()
	if len(args) == 0 {
		fmt.Fprint(stderr, streamUsage)
		return 2
	}
	base := "http://" + *admin + "/v1.0-alpha1/stream/jobs"
	var method, url, body string
	switch cmd := args[0]; {
	case cmd == "list" && len(args) == 1:
		method, url = "GET", base
	case cmd == "status" && len(args) == 2:
		method, url = "GET", base+"/"+args[1]
	case (cmd == "pause" || cmd == "resume" || cmd == "checkpoint") && len(args) == 2:
		method, url = "POST", base+"/"+args[1]+"/"+cmd
	case cmd == "set" && len(args) >= 2:
		sf := flag.NewFlagSet("mecha stream set", flag.ContinueOnError)
		sf.SetOutput(stderr)
		rate := sf.String("rate", "", "records per second read from the source (0 removes the limit)")
		sampling := sf.String("sampling", "", "share of records kept, in (0, 1]")
		cps := sf.String("checkpoints", "", "on or off")
		if code, ok := parseFlags(sf, args[2:], stderr); !ok {
			return code
		}
		cfg := map[string]any{}
		if *rate != "" {
			v, err := strconv.ParseFloat(*rate, 64)
			if err != nil {
				fmt.Fprintf(stderr, "mecha stream set: --rate %q is not a number\n", *rate)
				return 2
			}
			cfg["rateLimit"] = v
		}
		if *sampling != "" {
			v, err := strconv.ParseFloat(*sampling, 64)
			if err != nil {
				fmt.Fprintf(stderr, "mecha stream set: --sampling %q is not a number\n", *sampling)
				return 2
			}
			cfg["sampling"] = v
		}
		switch *cps {
		case "":
		case "on", "off":
			cfg["checkpoints"] = *cps == "on"
		default:
			fmt.Fprintf(stderr, "mecha stream set: --checkpoints %q: want on or off\n", *cps)
			return 2
		}
		if len(cfg) == 0 {
			fmt.Fprintln(stderr, "mecha stream set: give --rate, --sampling or --checkpoints")
			return 2
		}
		b, _ := json.Marshal(cfg)
		method, url, body = "PUT", base+"/"+args[1]+"/config", string(b)
	default:
		fmt.Fprint(stderr, streamUsage)
		return 2
	}
	out, ok := adminCall("mecha stream", *admin, method, url, body, stderr)
	if !ok {
		return 1
	}
	if args[0] == "list" && *output == "table" {
		if err := jobTable(stdout, out); err == nil {
			return 0
		}
	}
	writeJSON(stdout, out)
	return 0
}

// adminFlags is the flag set of a command that talks to a running
// mecha's admin API: --admin, its metrics address, and -o, the output
// (table or json).
func adminFlags(name, usage string, stderr io.Writer) (fs *flag.FlagSet, admin, output *string) {
	fs = flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	admin = fs.String("admin", "127.0.0.1:9090", "mecha run's metrics (admin) address")
	output = fs.String("o", "table", "the output: table or json")
	fs.Usage = func() { fmt.Fprint(stderr, usage) }
	return fs, admin, output
}

// adminCall makes one request of a running mecha's admin API (on its
// metrics port), with the API token of DAPR_API_TOKEN, and returns the
// answer's body; a failure is printed, prefixed by who, with what to
// check.
func adminCall(who, admin, method, url, body string, stderr io.Writer) ([]byte, bool) {
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", who, err)
		return nil, false
	}
	if tok := os.Getenv("DAPR_API_TOKEN"); tok != "" {
		req.Header.Set("dapr-api-token", tok) // the admin APIs want the runtime's API token
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v (is mecha run up, with its metrics port at --admin %s?)\n", who, err, admin)
		return nil, false
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		fmt.Fprintf(stderr, "%s: %s: %s", who, resp.Status, out)
		return nil, false
	}
	return out, true
}

// writeJSON prints a JSON body indented.
func writeJSON(w io.Writer, out []byte) {
	var pretty bytes.Buffer
	if json.Indent(&pretty, out, "", "  ") == nil {
		out = append(pretty.Bytes(), '\n')
	}
	w.Write(out)
}

// jobTable prints `mecha stream list` as a table, a job a line.
func jobTable(w io.Writer, body []byte) error {
	var jobs []struct {
		Job              string           `json:"job"`
		Source           string           `json:"source"`
		Paused           bool             `json:"paused"`
		Overloaded       string           `json:"overloaded"`
		InputRate        float64          `json:"inputRate"`
		OutputRate       float64          `json:"outputRate"`
		Lag              map[string]int64 `json:"lag"`
		WatermarkDelayMs int64            `json:"watermarkDelayMs"`
		CheckpointCount  int64            `json:"checkpointCount"`
		In               int64            `json:"in"`
		Out              int64            `json:"out"`
	}
	if err := json.Unmarshal(body, &jobs); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "JOB\tSOURCE\tSTATE\tIN/S\tOUT/S\tIN\tOUT\tLAG\tWATERMARK DELAY\tCHECKPOINTS")
	for _, j := range jobs {
		st := "running"
		switch {
		case j.Paused:
			st = "paused"
		case j.Overloaded != "":
			st = "overloaded (" + j.Overloaded + ")"
		}
		var lag int64
		for _, n := range j.Lag {
			lag += n
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%.0f\t%.0f\t%d\t%d\t%d\t%s\t%d\n", j.Job, j.Source, st, j.InputRate, j.OutputRate, j.In, j.Out, lag,
			(time.Duration(j.WatermarkDelayMs) * time.Millisecond).String(), j.CheckpointCount)
	}
	if len(jobs) == 0 {
		fmt.Fprintln(tw, "(no stream jobs)")
	}
	return tw.Flush()
}
