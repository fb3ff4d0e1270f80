package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"

	"mecha/stream/nexmark"
)

const streamBenchUsage = `Usage: mecha stream bench nexmark --query Q --events N [flags]

Runs a Nexmark query as a stream job. By default the Person/Auction/Bid
generator feeds the job's pipeline directly and the results go to a
blackhole sink, as Flink's Nexmark reference run does. The last line is

  nexmark Q events=N wall_s=W cpu_s=C per_core=R

where R is events per CPU-second of the whole process, generator
included. With --through-broker the events go generator → broker topic →
job instead, and the last line starts with nexmark-broker: into an
embedded broker that the generator and the job call in-process (as
inside mecha run), or, with --brokers, into that cluster over franz-go.

Flags:
`

// streamBenchCmd is 'mecha stream bench nexmark'.
func streamBenchCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("mecha stream bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	query := fs.String("query", "q0", "the query: "+strings.Join(nexmark.Queries(), ", "))
	events := fs.Int64("events", 10_000_000, "events to generate")
	par := fs.Int("parallelism", 1, "the job's tasks (and source partitions)")
	rate := fs.Float64("rate", 10_000_000, "events per second of event time")
	through := fs.Bool("through-broker", false, "run generator → broker → job instead of feeding the job directly")
	brokers := fs.String("brokers", "", "with --through-broker: a cluster to use instead of an embedded broker")
	fs.Usage = func() {
		fmt.Fprint(stderr, streamBenchUsage)
		fs.PrintDefaults()
	}
	if len(args) == 0 || args[0] != "nexmark" {
		fs.Usage()
		return 2
	}
	if code, ok := parseFlags(fs, args[1:], stderr); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "mecha stream bench: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if *events <= 0 {
		fmt.Fprintf(stderr, "mecha stream bench: --events must be positive, got %d\n", *events)
		return 2
	}
	if *par <= 0 || *par > 256 {
		fmt.Fprintf(stderr, "mecha stream bench: --parallelism must be 1 to 256, got %d\n", *par)
		return 2
	}
	if _, err := nexmark.Query(*query, "t", 1); err != nil {
		fmt.Fprintf(stderr, "mecha stream bench: --query: %v\n", err)
		return 2
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt)
	defer cancel()
	cfg := nexmark.Config{Query: *query, Events: *events, Parallelism: *par, Rate: *rate}
	var res nexmark.Result
	var err error
	prefix := "nexmark"
	if *through {
		prefix = "nexmark-broker"
		res, err = nexmark.RunThroughBroker(ctx, cfg, *brokers)
	} else {
		res, err = nexmark.Run(ctx, cfg)
	}
	if err != nil {
		fmt.Fprintf(stderr, "mecha stream bench: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "outputs=%d events_per_s=%.0f max_rss_mb=%.1f heap_inuse_mb=%.1f parallelism=%d\n",
		res.Outputs, float64(res.Events)/res.Wall.Seconds(), float64(res.MaxRSS)/(1<<20), float64(res.HeapInUse)/(1<<20), *par)
	fmt.Fprintln(stdout, res.Line(prefix))
	return 0
}
