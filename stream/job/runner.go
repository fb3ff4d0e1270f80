package job

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"mecha/stream/agg"
	"mecha/stream/window"
)

// Options are what a runner needs besides its spec.
type Options struct {
	// Brokers is the cluster when the source names none (the embedded
	// broker inside mecha run).
	Brokers string
	// Stdout receives a stdout sink's results, one JSON object a line.
	Stdout io.Writer
	// SaveState writes a state sink's results to a state store of the
	// runtime; nil outside mecha run, where a state sink is refused.
	SaveState func(ctx context.Context, store string, entries []StateEntry) error
	Logger    *slog.Logger
}

// StateEntry is one result for a state sink.
type StateEntry struct {
	Key   string
	Value []byte
}

// Output is one window result as a sink receives it.
type Output struct {
	Job         string `json:"job"`
	Key         string `json:"key"`
	WindowStart int64  `json:"windowStart"`
	WindowEnd   int64  `json:"windowEnd"`
	Value       any    `json:"value"`
	// Update marks a window fired again by a late event within the
	// allowed lateness.
	Update bool `json:"update,omitempty"`
}

// Runner runs one job. Today it consumes in the job's consumer group with
// at-least-once delivery (offsets auto-committed); checkpoints that make
// state-store sinks exactly-once come next (issue 5).
type Runner struct {
	spec Spec
	prog *program
	op   *window.Operator
	// wms holds one watermark per source partition; the job's watermark
	// is the lowest of them, so a partition that lags holds windows open
	// instead of making its events late.
	wms  map[int32]*window.Watermark
	opts Options
	cl   *kgo.Client

	mu     sync.Mutex // guards counts
	counts Counts
}

// Counts are a runner's totals.
type Counts struct {
	In, Filtered, Late, DeadLettered, Out int64
}

// New validates spec and builds a runner; Run starts it.
func New(spec Spec, opts Options) (*Runner, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	prog, err := compile(spec)
	if err != nil {
		return nil, err
	}
	f, err := agg.NewFactory(agg.Spec{Kind: agg.Kind(spec.Aggregate.Type), N: spec.Aggregate.N})
	if err != nil {
		return nil, err
	}
	op, err := window.NewOperator(spec.windowSpec(), f)
	if err != nil {
		return nil, err
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if spec.Sink.Type == "state" && opts.SaveState == nil {
		return nil, fmt.Errorf("%w %q: spec.sink: a state sink needs the runtime's state stores (mecha run)", ErrSpec, spec.Name)
	}
	brokers := spec.Source.Brokers
	if brokers == "" {
		brokers = opts.Brokers
	}
	if brokers == "" {
		return nil, fmt.Errorf("%w %q: spec.source.brokers: not set, and there is no embedded broker (--broker-port 0)", ErrSpec, spec.Name)
	}
	reset := kgo.NewOffset().AtStart()
	if spec.Source.StartOffset == "latest" {
		reset = kgo.NewOffset().AtEnd()
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(brokers, ",")...),
		kgo.ConsumerGroup("stream-"+spec.Name), kgo.ConsumeTopics(spec.Source.Topic),
		kgo.ConsumeResetOffset(reset), kgo.AllowAutoTopicCreation())
	if err != nil {
		return nil, err
	}
	return &Runner{spec: spec, prog: prog, op: op, wms: map[int32]*window.Watermark{}, opts: opts, cl: cl}, nil
}

// Counts returns the runner's totals so far.
func (r *Runner) Counts() Counts {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.counts
}

// Run consumes until ctx ends, then closes the client.
func (r *Runner) Run(ctx context.Context) error {
	defer r.cl.Close()
	for {
		fs := r.cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return nil
		}
		fs.EachError(func(t string, p int32, err error) {
			r.opts.Logger.Warn("stream: fetch", "job", r.spec.Name, "topic", t, "partition", p, "err", err)
		})
		var out []*kgo.Record
		fs.EachRecord(func(rec *kgo.Record) { out = append(out, r.process(rec)...) })
		r.deliver(ctx, out)
	}
}

// deliver hands a poll's outputs to their sinks, backing off and retrying
// while a sink is down (100 ms doubling to 5 s), until it takes them or
// the job stops: the job waits rather than drop results.
func (r *Runner) deliver(ctx context.Context, out []*kgo.Record) {
	var recs []*kgo.Record
	var entries []StateEntry
	for _, rec := range out {
		if rec.Topic == "" { // a state sink's result
			entries = append(entries, StateEntry{Key: string(rec.Key), Value: rec.Value})
		} else {
			recs = append(recs, rec)
		}
	}
	store := r.spec.Sink.Store
	if store == "" {
		store = "statestore"
	}
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil && (len(recs) > 0 || len(entries) > 0) {
		var err error
		if len(recs) > 0 {
			if err = r.cl.ProduceSync(ctx, recs...).FirstErr(); err == nil {
				recs = nil
			}
		}
		if err == nil && len(entries) > 0 {
			if err = r.opts.SaveState(ctx, store, entries); err == nil {
				entries = nil
			}
		}
		if err == nil || ctx.Err() != nil {
			return
		}
		r.opts.Logger.Warn("stream: sink failed; retrying", "job", r.spec.Name, "backoff", backoff, "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// process runs one source record through the pipeline and returns the
// records to produce (results, dead letters, late events).
func (r *Runner) process(rec *kgo.Record) []*kgo.Record {
	r.count(func(c *Counts) { c.In++ })
	var fields map[string]any
	if err := json.Unmarshal(rec.Value, &fields); err != nil {
		return r.deadLetter(rec, fmt.Errorf("decode: %v", err))
	}
	out, key, in, keep, err := r.prog.apply(fields)
	if err != nil {
		return r.deadLetter(rec, err)
	}
	if !keep {
		r.count(func(c *Counts) { c.Filtered++ })
		return nil
	}
	ts := rec.Timestamp.UnixMilli()
	if f := r.spec.Source.EventTimeField; f != "" {
		v, ok := toFloat(out[f])
		if !ok {
			if v2, ok2 := toFloat(fields[f]); ok2 {
				v, ok = v2, true
			}
		}
		if !ok {
			return r.deadLetter(rec, fmt.Errorf("event time: field %q is not a number", f))
		}
		ts = int64(v)
	}
	updates, late := r.op.Add(key, ts, in)
	var res []*kgo.Record
	if late {
		r.count(func(c *Counts) { c.Late++ })
		if r.spec.LateTopic != "" {
			res = append(res, &kgo.Record{Topic: r.spec.LateTopic, Key: rec.Key, Value: rec.Value, Headers: rec.Headers})
		}
	}
	res = append(res, r.emit(updates)...)
	return append(res, r.emit(r.op.Advance(r.observe(rec.Partition, ts)))...)
}

// observe notes an event time on a source partition and returns the
// job's watermark.
func (r *Runner) observe(partition int32, ts int64) int64 {
	w := r.wms[partition]
	if w == nil {
		w = &window.Watermark{Delay: r.spec.Source.MaxOutOfOrderness.Milliseconds()}
		r.wms[partition] = w
	}
	w.Observe(ts)
	low := w.Current()
	for _, o := range r.wms {
		low = min(low, o.Current())
	}
	return low
}

func (r *Runner) emit(results []window.Result) []*kgo.Record {
	var out []*kgo.Record
	for _, w := range results {
		b, _ := json.Marshal(Output{Job: r.spec.Name, Key: w.Key, WindowStart: w.Window.Start, WindowEnd: w.Window.End, Value: w.Value, Update: w.Update})
		r.count(func(c *Counts) { c.Out++ })
		switch r.spec.Sink.Type {
		case "stdout":
			if r.opts.Stdout != nil {
				fmt.Fprintf(r.opts.Stdout, "%s\n", b)
			}
			continue
		case "state":
			// No topic: deliver sends it to the state store.
			out = append(out, &kgo.Record{Key: []byte(fmt.Sprintf("%s:%s:%d", r.spec.Name, w.Key, w.Window.Start)), Value: b})
			continue
		}
		out = append(out, &kgo.Record{Topic: r.spec.Sink.Topic, Key: []byte(w.Key), Value: b})
	}
	return out
}

// deadLetter sends a record that failed to the dead-letter topic with the
// error in a header, and counts it; the job goes on.
func (r *Runner) deadLetter(rec *kgo.Record, err error) []*kgo.Record {
	r.count(func(c *Counts) { c.DeadLettered++ })
	r.opts.Logger.Warn("stream: record dead-lettered", "job", r.spec.Name, "topic", rec.Topic, "partition", rec.Partition, "offset", rec.Offset, "err", err)
	if r.spec.DeadLetterTopic == "" {
		return nil
	}
	h := append(append([]kgo.RecordHeader(nil), rec.Headers...), kgo.RecordHeader{Key: "error", Value: []byte(err.Error())},
		kgo.RecordHeader{Key: "source", Value: []byte(fmt.Sprintf("%s/%d@%d", rec.Topic, rec.Partition, rec.Offset))})
	return []*kgo.Record{{Topic: r.spec.DeadLetterTopic, Key: rec.Key, Value: rec.Value, Headers: h}}
}

func (r *Runner) count(f func(*Counts)) {
	r.mu.Lock()
	f(&r.counts)
	r.mu.Unlock()
}
