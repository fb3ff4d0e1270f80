package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"mecha/stream/gen"
)

const streamGenUsage = `Usage:
  mecha stream gen --topic T --template FILE [--key FIELD] [--seed N] [--rate N] [--count N]
  mecha stream gen --topic T --from-topic SRC [--speedup F] [--retime] [--rate N] [--count N]
  mecha stream gen --topic T --from-topic SRC --copies N [--vary FIELD] [--rate N] [--count N]

Writes load to topic T, in one of three modes:
  template   records from a JSON template whose fields vary by distribution
  replay     SRC's records again, with the gaps between their timestamps
             divided by --speedup (time compression)
  doubling   every record of SRC written --copies times

--rate 0 writes as fast as the broker takes the records; --count 0 writes
until Ctrl-C (template) or the end of SRC as of the start. The last line
reads "gen: wrote N records to T in W s (R records/s)". See docs/stream.md.

Flags:
`

// streamGenCmd runs the load generator until its count, the end of its
// source, or SIGINT/SIGTERM.
func streamGenCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("mecha stream gen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	brokers := fs.String("brokers", "127.0.0.1:9092", "the cluster's seed brokers, host:port[,host:port...]")
	topic := fs.String("topic", "", "the topic to write (created when missing)")
	tmplFile := fs.String("template", "", "template mode: the JSON template file")
	key := fs.String("key", "", "template mode: the top-level field whose value keys each record")
	seed := fs.Uint64("seed", 0, "template mode: the random seed (0 picks one and prints it)")
	from := fs.String("from-topic", "", "replay or doubling: the source topic")
	speedup := fs.Float64("speedup", 0, "replay: divide the gaps between record timestamps by this (0: no pacing)")
	retime := fs.Bool("retime", false, "replay: compress the records' timestamps by --speedup too")
	copies := fs.Int("copies", 0, "doubling: write every source record this many times")
	vary := fs.String("vary", "", "doubling: the top-level JSON field that copy i>0 suffixes with \"-i\"")
	rate := fs.Float64("rate", 0, "records per second (0: as fast as possible)")
	count := fs.Int64("count", 0, "records to write (0: until Ctrl-C, or the end of the source)")
	fs.Usage = func() {
		fmt.Fprint(stderr, streamGenUsage)
		fs.PrintDefaults()
	}
	if code, ok := parseFlags(fs, args, stderr); !ok {
		return code
	}
	fail := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "mecha stream gen: "+format+"\n", a...)
		return 2
	}
	if fs.NArg() > 0 {
		return fail("unexpected argument %q", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	cfg := gen.Config{Topic: *topic, Rate: *rate, Count: *count, Key: *key, Seed: *seed, FromTopic: *from,
		Speedup: *speedup, Retime: *retime, Copies: *copies, Vary: *vary,
		Logger: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	for _, b := range strings.Split(*brokers, ",") {
		if b = strings.TrimSpace(b); b != "" {
			cfg.Brokers = append(cfg.Brokers, b)
		}
	}
	switch {
	case *tmplFile != "" && *from != "":
		return fail("--template and --from-topic: give one, not both")
	case *tmplFile != "":
		cfg.Mode = gen.ModeTemplate
		raw, err := os.ReadFile(*tmplFile)
		if err != nil {
			return fail("--template: %v", err)
		}
		if cfg.Template, err = gen.ParseTemplate(raw); err != nil {
			return fail("--template %s: %v", *tmplFile, err)
		}
		if cfg.Seed == 0 {
			cfg.Seed = uint64(time.Now().UnixNano())
			fmt.Fprintf(stderr, "gen: seed %d\n", cfg.Seed)
		}
	case *from != "" && set["copies"]:
		cfg.Mode = gen.ModeDouble
	case *from != "":
		cfg.Mode = gen.ModeReplay
	default:
		return fail("give --template FILE or --from-topic TOPIC")
	}
	if set["seed"] && cfg.Mode != gen.ModeTemplate {
		return fail("--seed: template mode only")
	}
	if err := cfg.Validate(); err != nil {
		return genFail(stderr, err)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	st, err := gen.Run(ctx, cfg)
	if st.Unvaried > 0 {
		fmt.Fprintf(stderr, "gen: %d source records had no top-level field %q; their copies are identical\n", st.Unvaried, cfg.Vary)
	}
	if err != nil {
		if st.Records > 0 {
			fmt.Fprintf(stderr, "gen: wrote %d records to %s before the error\n", st.Records, cfg.Topic)
		}
		return genFail(stderr, err)
	}
	fmt.Fprintf(stdout, "gen: wrote %d records to %s in %.2f s (%.0f records/s)\n",
		st.Records, cfg.Topic, st.Elapsed.Seconds(), st.PerSecond())
	return 0
}

// genFail prints a run's error: a bad field of the config names its flag
// and exits 2, anything else exits 1.
func genFail(stderr io.Writer, err error) int {
	var ce *gen.ConfigError
	if errors.As(err, &ce) {
		fmt.Fprintf(stderr, "mecha stream gen: --%s: %s\n", ce.Field, ce.Problem)
		return 2
	}
	fmt.Fprintf(stderr, "mecha stream gen: %v\n", err)
	return 1
}
