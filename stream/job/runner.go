package job

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/time/rate"

	"mecha/stream/agg"
	"mecha/stream/overload"
	"mecha/stream/window"
)

// Options are what a runner needs besides its spec.
type Options struct {
	// Brokers is the cluster when the source names none (the embedded
	// broker inside mecha run).
	Brokers string
	// DataDir holds the job's checkpoints (DataDir/<job>/checkpoint.json);
	// empty turns checkpoints off, and the job starts from
	// source.startOffset every time.
	DataDir string
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

// Runner runs one job as a single task. It reads every partition of the
// source directly, at the offsets of its last checkpoint (or
// source.startOffset), so that offsets and window state are saved
// together. Results after the last checkpoint are produced again after a
// crash: a state sink overwrites them with the same values (exactly-once
// state), a topic sink sees them twice (at-least-once).
type Runner struct {
	spec    Spec
	prog    *program
	agg     *agg.Aggregator
	op      *window.Operator
	brokers []string
	dir     string          // checkpoint dir; "" when checkpoints are off
	offsets map[int32]int64 // next offset per source partition, owned by Run
	// wms holds one watermark per source partition; the job's watermark
	// is the lowest of them, so a partition that lags holds windows open
	// instead of making its events late.
	wms map[int32]*window.Watermark
	// active is when each partition last had a record, for idleness;
	// started stands in for partitions that never had one.
	active  map[int32]time.Time
	started time.Time
	opts    Options
	cl      *kgo.Client

	ctl  control
	ctrl overload.Controller // owned by Run

	mu             sync.Mutex // guards the fields below, written by Run
	counts         Counts
	inRate         float64
	outRate        float64
	lag            map[int32]int64
	wmNow          int64
	lastCheckpoint time.Time
	pausedNow      bool
	effectiveRate  float64 // the source limit in force: static, or the overload controller's
	overloaded     string  // the last breach, while the controller limits the rate
}

// Counts are a runner's totals.
type Counts struct {
	In, Filtered, SampledOut, Late, DeadLettered, Out int64
	Checkpoints                                       int64
	CheckpointBytes                                   int64
	CheckpointDuration                                time.Duration
	// Restored is set when the run resumed from a checkpoint.
	Restored bool
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
	ag, err := agg.NewAggregator(agg.Spec{Kind: agg.Kind(spec.Aggregate.Type), N: spec.Aggregate.N})
	if err != nil {
		return nil, err
	}
	op, err := window.NewOperator(spec.windowSpec(), ag.New)
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
	r := &Runner{spec: spec, prog: prog, agg: ag, op: op, brokers: strings.Split(brokers, ","),
		offsets: map[int32]int64{}, wms: map[int32]*window.Watermark{}, active: map[int32]time.Time{}, opts: opts,
		lag: map[int32]int64{}, wmNow: math.MinInt64}
	r.ctl.sampling = 1
	r.ctl.rateLimit = spec.Source.RateLimit
	o := spec.Overload
	r.ctrl = overload.Controller{Thresholds: overload.Thresholds{MaxBacklog: o.MaxBacklog, MaxLagMs: o.MaxLag.Milliseconds(),
		MaxCPU: o.MaxCPU, MaxGCPauseMs: float64(o.MaxGCPause.Microseconds()) / 1000}}
	if opts.DataDir != "" {
		r.dir = filepath.Join(opts.DataDir, spec.Name)
		r.ctl.checkpoints = !spec.Checkpoint.Disabled
	}
	return r, nil
}

// Counts returns the runner's totals so far.
func (r *Runner) Counts() Counts {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.counts
}

// Run restores the last checkpoint, then consumes until ctx ends. It
// checkpoints every spec.checkpoint.interval once the results of the
// records up to then are delivered. A job stopped between checkpoints
// (a crash, or a shutdown) resumes from the last one.
func (r *Runner) Run(ctx context.Context) error {
	if r.dir != "" {
		if err := r.restore(); err != nil {
			return err
		}
	}
	parts, err := r.sourcePartitions(ctx)
	if err != nil {
		return err
	}
	start := kgo.NewOffset().AtStart()
	if r.spec.Source.StartOffset == "latest" {
		start = kgo.NewOffset().AtEnd()
	}
	from := map[int32]kgo.Offset{}
	for _, p := range parts {
		// Every partition holds the watermark back until it has data, so
		// a partition read later does not find its events late.
		if r.wms[p] == nil {
			r.wms[p] = &window.Watermark{Delay: r.spec.Source.MaxOutOfOrderness.Milliseconds()}
		}
		if o, ok := r.offsets[p]; ok {
			from[p] = kgo.NewOffset().At(o)
		} else {
			from[p] = start
		}
	}
	r.cl, err = kgo.NewClient(kgo.SeedBrokers(r.brokers...), kgo.AllowAutoTopicCreation(),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{r.spec.Source.Topic: from}))
	if err != nil {
		return err
	}
	defer r.cl.Close()
	interval := r.spec.Checkpoint.Interval.Duration
	if interval == 0 {
		interval = 10 * time.Second
	}
	last := time.Now()
	r.started = last
	idle := r.spec.Source.IdleTimeout.Duration
	if idle == 0 {
		idle = 5 * time.Second
	}
	var limiter *rate.Limiter
	paused := false
	healthEvery := r.spec.Overload.Interval.Duration
	if healthEvery == 0 {
		healthEvery = time.Second
	}
	usage := newUsage()
	rateAt, rateIn, rateOut := last, int64(0), int64(0)
	for {
		c := r.ctl.snapshot()
		if c.paused != paused {
			paused = c.paused
			if paused {
				r.cl.PauseFetchTopics(r.spec.Source.Topic)
			} else {
				r.cl.ResumeFetchTopics(r.spec.Source.Topic)
			}
		}
		// Poll no longer than the time to the next checkpoint, so that an
		// idle job still checkpoints what it processed, nor much longer
		// than the idle timeout, so that idle partitions release the
		// watermark.
		wait := min(idle/2, time.Second)
		if c.checkpoints {
			wait = min(wait, max(time.Until(last.Add(interval)), time.Millisecond))
		}
		pctx, cancel := context.WithTimeout(ctx, wait)
		fs := r.cl.PollFetches(pctx)
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		fs.EachError(func(t string, p int32, err error) {
			if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
				return
			}
			r.opts.Logger.Warn("stream: fetch", "job", r.spec.Name, "topic", t, "partition", p, "err", err)
		})
		// Sampling and the rate limit as they are now, after the poll: a
		// change made while it waited applies to what it returned.
		sc := r.ctl.snapshot()
		r.ctrl.Static = sc.rateLimit
		limit := r.ctrl.Rate()
		switch {
		case limit == 0:
			limiter = nil
		case limiter == nil:
			limiter = rate.NewLimiter(rate.Limit(limit), max(1, int(limit/10)))
		case float64(limiter.Limit()) != limit:
			limiter.SetLimit(rate.Limit(limit))
			limiter.SetBurst(max(1, int(limit/10)))
		}
		var out []*kgo.Record
		fs.EachRecord(func(rec *kgo.Record) {
			if limiter != nil {
				_ = limiter.Wait(ctx)
			}
			if sc.sampling < 1 && !sampled(rec.Offset, sc.sampling) {
				r.count(func(c *Counts) { c.In++; c.SampledOut++ })
			} else {
				out = append(out, r.process(rec)...)
			}
			r.offsets[rec.Partition] = rec.Offset + 1
		})
		// Partitions that went idle may have let the watermark move.
		now := time.Now()
		wm := r.watermark(now)
		out = append(out, r.emit(r.op.Advance(wm))...)
		r.deliver(ctx, out)
		if ctx.Err() != nil {
			return nil
		}
		r.mu.Lock()
		fs.EachPartition(func(p kgo.FetchTopicPartition) {
			if p.HighWatermark >= 0 {
				r.lag[p.Partition] = max(0, p.HighWatermark-r.offsets[p.Partition])
			}
		})
		r.wmNow = wm
		// A pause counts once a poll ran with the topic paused: from then
		// on nothing more is read.
		r.pausedNow = paused
		var health *overload.Health
		if dt := now.Sub(rateAt); dt >= healthEvery {
			r.inRate = float64(r.counts.In-rateIn) / dt.Seconds()
			r.outRate = float64(r.counts.Out-rateOut) / dt.Seconds()
			rateAt, rateIn, rateOut = now, r.counts.In, r.counts.Out
			h := overload.Health{InputRate: r.inRate, CPU: usage.cpu(now), GCPauseMs: usage.gcPause()}
			for _, n := range r.lag {
				h.Backlog += n
			}
			if wm > math.MinInt64/2 {
				h.LagMs = now.UnixMilli() - wm
			}
			health = &h
		}
		r.mu.Unlock()
		if health != nil {
			if lim, why := r.ctrl.Observe(*health); why != "" {
				r.opts.Logger.Warn("stream: overload control", "job", r.spec.Name, "rate", lim, "why", why)
			}
			r.mu.Lock()
			r.effectiveRate = r.ctrl.Rate()
			r.overloaded = ""
			if b := r.ctrl.Thresholds.Breach(*health); b != "" {
				r.overloaded = b
			}
			r.mu.Unlock()
		}
		if (c.checkpoints && time.Since(last) >= interval) || (c.trigger && r.dir != "") {
			if c.trigger {
				r.ctl.mu.Lock()
				r.ctl.trigger = false
				r.ctl.mu.Unlock()
			}
			if err := r.checkpoint(); err != nil {
				r.opts.Logger.Error("stream: checkpoint failed; the previous one stands", "job", r.spec.Name, "err", err)
			}
			last = time.Now()
		}
	}
}

// usage measures the process's CPU and GC pauses between samples.
type usage struct {
	at      time.Time
	cpuTime time.Duration
	numGC   int64
}

func newUsage() *usage {
	u := &usage{at: time.Now(), cpuTime: processCPU()}
	var st debug.GCStats
	debug.ReadGCStats(&st)
	u.numGC = st.NumGC
	return u
}

// cpu is the cores used since the last call.
func (u *usage) cpu(now time.Time) float64 {
	c := processCPU()
	used, wall := c-u.cpuTime, now.Sub(u.at)
	u.at, u.cpuTime = now, c
	if wall <= 0 {
		return 0
	}
	return used.Seconds() / wall.Seconds()
}

// gcPause is the longest GC pause since the last call, in milliseconds.
func (u *usage) gcPause() float64 {
	var st debug.GCStats
	debug.ReadGCStats(&st)
	n := int(st.NumGC - u.numGC)
	u.numGC = st.NumGC
	longest := time.Duration(0)
	for i := 0; i < n && i < len(st.Pause); i++ {
		longest = max(longest, st.Pause[i])
	}
	return float64(longest.Microseconds()) / 1000
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// sampled keeps a record by its offset: the same records on a replay.
func sampled(offset int64, share float64) bool {
	h := uint64(offset) * 0x9E3779B97F4A7C15
	return float64(h>>11)/float64(1<<53) < share
}

// sourcePartitions returns the source topic's partitions, creating the
// topic (with the cluster's defaults) when it does not exist yet.
func (r *Runner) sourcePartitions(ctx context.Context) ([]int32, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(r.brokers...))
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	topic := r.spec.Source.Topic
	for backoff := 100 * time.Millisecond; ; backoff = min(2*backoff, 5*time.Second) {
		details, err := adm.ListTopics(ctx, topic)
		if err == nil {
			if d, ok := details[topic]; ok && d.Err == nil && len(d.Partitions) > 0 {
				return d.Partitions.Numbers(), nil
			}
			if _, cerr := adm.CreateTopic(ctx, -1, -1, nil, topic); cerr != nil && !errors.Is(cerr, kerr.TopicAlreadyExists) {
				err = cerr
			}
		}
		if err != nil {
			r.opts.Logger.Warn("stream: source topic not reachable; retrying", "job", r.spec.Name, "topic", topic, "err", err)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(backoff):
		}
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
	r.active[partition] = time.Now()
	return r.watermark(time.Now())
}

// watermark is the lowest watermark of the partitions that are not idle;
// when every partition is idle, the highest (nothing is coming).
func (r *Runner) watermark(now time.Time) int64 {
	idle := r.spec.Source.IdleTimeout.Duration
	if idle == 0 {
		idle = 5 * time.Second
	}
	low, high, any := int64(math.MaxInt64), int64(math.MinInt64), false
	for p, w := range r.wms {
		cur := w.Current()
		high = max(high, cur)
		last, ok := r.active[p]
		if !ok {
			last = r.started
		}
		if now.Sub(last) > idle {
			continue
		}
		any = true
		low = min(low, cur)
	}
	if !any {
		return high
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
