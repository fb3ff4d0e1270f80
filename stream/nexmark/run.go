package nexmark

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"mecha/broker"
	"mecha/broker/inproc"
	"mecha/internal/procstat"
	"mecha/stream/job"
)

// ErrQuery is returned for a query this package does not have.
var ErrQuery = errors.New("nexmark: unknown query")

func dur(d time.Duration) job.Duration { return job.Duration{Duration: d} }

// queries are the Nexmark queries as stream jobs, over the bid events.
var queries = map[string]func() job.Spec{
	// q0: pass-through, the cost of reading and writing.
	"q0": func() job.Spec {
		return job.Spec{Filter: `event_type == 2`}
	},
	// q1: currency conversion, dollars to euros.
	"q1": func() job.Spec {
		return job.Spec{Filter: `event_type == 2`, Map: map[string]string{
			"auction": "auction", "bidder": "bidder", "price": "price * 908 / 1000", "dateTime": "dateTime"}}
	},
	// q2: selection, the bids of a set of auctions.
	"q2": func() job.Spec {
		return job.Spec{Filter: `event_type == 2 && auction % 123 == 0`, Map: map[string]string{"auction": "auction", "price": "price"}}
	},
	// q5: hot items, the auction with the most bids in each 10 s window
	// sliding every 2 s.
	"q5": func() job.Spec {
		return job.Spec{Filter: `event_type == 2`,
			Window:    job.Window{Type: "sliding", Size: dur(10 * time.Second), Slide: dur(2 * time.Second)},
			Aggregate: job.Aggregate{Type: "topN", N: 1, Field: "auction"}}
	},
	// q7: the highest bid in each 10 s window.
	"q7": func() job.Spec {
		return job.Spec{Filter: `event_type == 2`,
			Window:    job.Window{Type: "tumbling", Size: dur(10 * time.Second)},
			Aggregate: job.Aggregate{Type: "max", Field: "price"}}
	},
	// uv: exact distinct bidders per auction in each 10 s window.
	"uv": func() job.Spec {
		return job.Spec{Filter: `event_type == 2`, KeyBy: "auction",
			Window:    job.Window{Type: "tumbling", Size: dur(10 * time.Second)},
			Aggregate: job.Aggregate{Type: "countDistinct", Field: "bidder"}}
	},
}

// Queries lists the query names.
func Queries() []string {
	var out []string
	for q := range queries {
		out = append(out, q)
	}
	sort.Strings(out)
	return out
}

// Query is a query as a job reading topic with a blackhole sink.
func Query(name, topic string, parallelism int) (job.Spec, error) {
	f := queries[name]
	if f == nil {
		return job.Spec{}, fmt.Errorf("%w %q: want one of %s", ErrQuery, name, strings.Join(Queries(), ", "))
	}
	s := f()
	s.Name = "nexmark-" + name
	s.Source = job.Source{Topic: topic, EventTimeField: "dateTime"}
	s.Sink = job.Sink{Type: "blackhole"}
	s.Parallelism = parallelism
	s.Checkpoint.Disabled = true
	return s, s.Validate()
}

// Config is a benchmark run.
type Config struct {
	Query  string
	Events int64
	// Parallelism is the job's tasks; the generated events are spread
	// over as many source partitions.
	Parallelism int
	// Rate is events per second of event time (default 10M, Flink's).
	Rate float64
	// Batch is the events per pipeline round (default 4096).
	Batch int
	Seed  uint64
}

func (c *Config) defaults() {
	if c.Parallelism <= 0 {
		c.Parallelism = 1
	}
	if c.Rate <= 0 {
		c.Rate = 10_000_000
	}
	if c.Batch <= 0 {
		c.Batch = 4096
	}
	if c.Seed == 0 {
		c.Seed = 42
	}
}

// Result is what a run measured.
type Result struct {
	Query   string
	Events  int64
	Outputs int64
	Wall    time.Duration
	// CPU is the whole process's user and system time over the run.
	CPU time.Duration
	// MaxRSS is the process's peak resident set, in bytes.
	MaxRSS int64
	// HeapInUse is the Go heap in use at the end, in bytes.
	HeapInUse uint64
}

// PerCore is events per CPU-second of the whole process.
func (r Result) PerCore() float64 {
	if r.CPU <= 0 {
		return 0
	}
	return float64(r.Events) / r.CPU.Seconds()
}

// Line is the run's summary line:
// nexmark Q events=N wall_s=W cpu_s=C per_core=R
func (r Result) Line(prefix string) string {
	return fmt.Sprintf("%s %s events=%d wall_s=%.3f cpu_s=%.3f per_core=%.0f", prefix, r.Query, r.Events, r.Wall.Seconds(), r.CPU.Seconds(), r.PerCore())
}

// Run generates cfg.Events events inside the job's pipeline, a round per
// batch, with a blackhole sink.
func Run(ctx context.Context, cfg Config) (Result, error) {
	cfg.defaults()
	spec, err := Query(cfg.Query, "nexmark", cfg.Parallelism)
	if err != nil {
		return Result{}, err
	}
	p, err := job.NewPipeline(spec)
	if err != nil {
		return Result{}, err
	}
	for i := range cfg.Parallelism {
		p.AddPartition("nexmark", int32(i))
	}
	g := NewGenerator(time.Now().UnixMilli(), cfg.Rate, cfg.Seed)
	batch := make([]job.Record, cfg.Batch)
	res := Result{Query: cfg.Query, Events: cfg.Events}
	cpu0, start := procstat.CPU(), time.Now()
	for g.Count() < cfg.Events && ctx.Err() == nil {
		n := int(min(int64(cfg.Batch), cfg.Events-g.Count()))
		for i := range n {
			off := g.Count()
			fields, ts := g.Next()
			batch[i] = job.Record{Topic: "nexmark", Partition: int32(off % int64(cfg.Parallelism)), Offset: off, Timestamp: ts, Fields: fields}
		}
		res.Outputs += int64(len(p.Round(batch[:n], time.Now())))
		clear(batch[:n])
	}
	res.Outputs += int64(len(p.Drain()))
	res.Wall, res.CPU = time.Since(start), procstat.CPU()-cpu0
	res.Events = g.Count()
	res.MaxRSS, res.HeapInUse = memory()
	return res, ctx.Err()
}

// RunThroughBroker runs generator → broker → engine: it writes the
// events as JSON to a new topic of brokers while the job reads them, and
// measures until the job has read them all. With brokers empty the
// broker is embedded (in a temporary directory), and the generator and
// the job call it in-process, as pubsub.mecha and jobs inside mecha run
// do; otherwise both are franz-go clients of brokers.
func RunThroughBroker(ctx context.Context, cfg Config, brokers string) (Result, error) {
	cfg.defaults()
	topic := fmt.Sprintf("nexmark-%s-%d", cfg.Query, time.Now().UnixNano())
	spec, err := Query(cfg.Query, topic, cfg.Parallelism)
	if err != nil {
		return Result{}, err
	}
	var prod producer
	var opts job.Options
	if brokers == "" {
		dir, err := os.MkdirTemp("", "nexmark-broker-")
		if err != nil {
			return Result{}, err
		}
		defer os.RemoveAll(dir)
		bc := broker.DefaultConfig()
		bc.Addr, bc.DataDir = "127.0.0.1:0", dir
		b, err := broker.Start(bc)
		if err != nil {
			return Result{}, err
		}
		defer b.Close()
		c := inproc.New(b, inproc.Options{Partitioner: kgo.ManualPartitioner()})
		if err := c.CreateTopic(ctx, topic, int32(cfg.Parallelism)); err != nil {
			return Result{}, err
		}
		prod, opts = &localProducer{c: c}, job.Options{Broker: b}
	} else {
		cl, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(brokers, ",")...), kgo.DefaultProduceTopic(topic),
			kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerLinger(5*time.Millisecond), kgo.MaxBufferedRecords(1<<16))
		if err != nil {
			return Result{}, err
		}
		defer cl.Close()
		if _, err := kadm.NewClient(cl).CreateTopic(ctx, int32(cfg.Parallelism), 1, nil, topic); err != nil {
			return Result{}, fmt.Errorf("creating %s: %w", topic, err)
		}
		prod, opts = &remoteProducer{cl: cl, failed: make(chan error, 1)}, job.Options{Brokers: brokers}
	}
	r, err := job.New(spec, opts)
	if err != nil {
		return Result{}, err
	}
	jctx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 1)
	res := Result{Query: cfg.Query, Events: cfg.Events}
	cpu0, start := procstat.CPU(), time.Now()
	go func() { done <- r.Run(jctx) }()
	g := NewGenerator(time.Now().UnixMilli(), cfg.Rate, cfg.Seed)
	for g.Count() < cfg.Events && ctx.Err() == nil {
		off := g.Count()
		fields, ts := g.Next()
		r := prod.record()
		r.Topic, r.Partition, r.Timestamp = topic, int32(off%int64(cfg.Parallelism)), time.UnixMilli(ts)
		r.Value = prod.encode(fields)
		if err := prod.produce(ctx, r); err != nil {
			return res, fmt.Errorf("producing: %w", err)
		}
	}
	if err := prod.flush(ctx); err != nil {
		return res, fmt.Errorf("producing: %w", err)
	}
	for r.Counts().In < cfg.Events {
		select {
		case err := <-done:
			return res, fmt.Errorf("the job stopped: %v", err)
		case <-ctx.Done():
			return res, ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
	res.Wall, res.CPU = time.Since(start), procstat.CPU()-cpu0
	res.Outputs = r.Counts().Out
	stop()
	<-done
	res.MaxRSS, res.HeapInUse = memory()
	return res, nil
}

// producer is how the generator writes to the broker.
type producer interface {
	// record returns a record to fill and produce.
	record() *kgo.Record
	// encode returns fields as the JSON a record carries.
	encode(fields map[string]any) []byte
	// produce takes a record, which may be written later, up to flush.
	produce(ctx context.Context, r *kgo.Record) error
	// flush writes what is pending and returns the first error so far.
	flush(ctx context.Context) error
}

// localProducer appends in-process, a batch of localBatch records at a
// time, as a Kafka client's producer batches. The records of a batch and
// their values are carved from one slab each: once the log has a batch,
// nothing refers to them.
type localProducer struct {
	c       *inproc.Client
	pending []*kgo.Record
	recs    []kgo.Record
	values  []byte
}

const localBatch = 4096

func (p *localProducer) record() *kgo.Record {
	if len(p.recs) == 0 {
		p.recs = make([]kgo.Record, localBatch)
	}
	r := &p.recs[0]
	p.recs = p.recs[1:]
	return r
}

func (p *localProducer) encode(fields map[string]any) []byte {
	if cap(p.values)-len(p.values) < 512 {
		p.values = make([]byte, 0, localBatch*256)
	}
	start := len(p.values)
	p.values = Encode(p.values, fields)
	return p.values[start:len(p.values):len(p.values)]
}

func (p *localProducer) produce(ctx context.Context, r *kgo.Record) error {
	p.pending = append(p.pending, r)
	if len(p.pending) < localBatch {
		return nil
	}
	return p.flush(ctx)
}

func (p *localProducer) flush(ctx context.Context) error {
	err := p.c.ProduceSync(ctx, p.pending...).FirstErr()
	clear(p.pending)
	p.pending = p.pending[:0]
	return err
}

// remoteProducer is franz-go's asynchronous producer.
type remoteProducer struct {
	cl     *kgo.Client
	failed chan error // the first failure, when there is one
}

func (p *remoteProducer) record() *kgo.Record { return &kgo.Record{} }

func (p *remoteProducer) encode(fields map[string]any) []byte {
	return Encode(make([]byte, 0, 256), fields)
}

func (p *remoteProducer) produce(ctx context.Context, r *kgo.Record) error {
	p.cl.Produce(ctx, r, func(_ *kgo.Record, err error) {
		if err != nil {
			select {
			case p.failed <- err:
			default:
			}
		}
	})
	select {
	case err := <-p.failed:
		return err
	default:
		return nil
	}
}

func (p *remoteProducer) flush(ctx context.Context) error {
	if err := p.cl.Flush(ctx); err != nil {
		return err
	}
	select {
	case err := <-p.failed:
		return err
	default:
		return nil
	}
}

func memory() (rss int64, heap uint64) {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return procstat.MaxRSS(), ms.HeapInuse
}
