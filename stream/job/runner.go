package job

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"golang.org/x/time/rate"

	"mecha/broker"
	"mecha/broker/inproc"
	"mecha/internal/backoff"
	"mecha/internal/procstat"
	"mecha/stream/overload"
)

// Options are what a runner needs besides its spec.
type Options struct {
	// Brokers is the cluster when the source names none (the embedded
	// broker inside mecha run).
	Brokers string
	// Broker is the embedded broker itself (inside mecha run): a job
	// whose source names no other brokers reads and writes it
	// in-process, without a socket.
	Broker broker.Local
	// DataDir holds the job's checkpoints (DataDir/<job>/checkpoint.json)
	// unless Checkpoints is set; both empty turn checkpoints off, and the
	// job starts from source.startOffset every time.
	DataDir string
	// Checkpoints, if set, keeps the job's checkpoints instead of
	// DataDir.
	Checkpoints CheckpointStore
	// SASL, if set, authenticates the network client of a job that reads
	// Brokers (the runtime's own credentials); a source naming other
	// brokers connects without.
	SASL sasl.Mechanism
	// Stdout receives a stdout sink's results, one JSON object a line.
	Stdout io.Writer
	// SaveState writes a state sink's results to a state store of the
	// runtime; nil outside mecha run, where a state sink is refused.
	SaveState func(ctx context.Context, store string, entries []StateEntry) error
	// InvokeApp POSTs an app sink's result to a route of the app; nil
	// outside mecha run, where an app sink is refused.
	InvokeApp func(ctx context.Context, route string, body []byte) error
	// Publish sends a pubsub sink's result to a topic of a pub/sub
	// component of the runtime; nil outside mecha run.
	Publish func(ctx context.Context, pubsub, topic string, body []byte) error
	Logger  *slog.Logger
}

// StateEntry is one result for a state sink.
type StateEntry struct {
	Key   string
	Value []byte
}

// Output is a window result as a sink receives it. A record passed
// through (a job without a window) is sent as its mapped fields instead,
// and a joined pair as {"left": …, "right": …} in Value.
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

// Runner runs one job over a Kafka-compatible cluster: the broker of its
// own process, in-process, or one over the network (cluster.go). It
// reads every partition of its source (and of a join's topic) directly,
// at the offsets of its last checkpoint (or source.startOffset), so that
// offsets and window state are saved together, and feeds them to its
// Pipeline one poll at a time. Results after the last checkpoint are produced
// again after a crash: a state sink overwrites them with the same values,
// and a topic sink skips those it finds already written (see Sink).
type Runner struct {
	spec    Spec
	pipe    *Pipeline
	brokers []string // nil in-process
	local   broker.Local
	topics  []string        // the source, then the join's topic
	store   CheckpointStore // nil when checkpoints are off
	// offsets is the next offset per source partition; Run owns it.
	offsets map[srcPart]int64
	opts    Options
	// cluster and src are Run's: where the job reads and writes, and its
	// reader of the source partitions.
	cluster cluster
	src     source
	// sinkEnds are the end offsets of the topics the job writes, as of
	// the last checkpoint; written counts the ids (mecha-id) found past
	// them on a restart, which delivery skips once each. Run owns both.
	sinkEnds map[srcPart]int64
	written  map[string]int

	ctl  control
	ctrl overload.Controller // owned by Run

	mu             sync.Mutex // guards the fields below, written by Run
	counts         Counts
	inRate         float64
	outRate        float64
	lag            map[srcPart]int64
	wmNow          int64
	lastCheckpoint time.Time
	pausedNow      bool
	effectiveRate  float64 // the source limit in force: static, or the overload controller's
	overloaded     string  // the last breach, while the controller limits the rate
}

// Counts are a runner's totals.
type Counts struct {
	In, Filtered, SampledOut, Late, DeadLettered, Out int64
	// Skipped are topic-sink records not written again after a restart
	// because the sink already had them.
	Skipped            int64
	Checkpoints        int64
	CheckpointBytes    int64
	CheckpointDuration time.Duration
	// Restored is set when the run resumed from a checkpoint.
	Restored bool
}

// New validates spec and builds a runner; Run starts it.
func New(spec Spec, opts Options) (*Runner, error) {
	pipe, err := NewPipeline(spec)
	if err != nil {
		return nil, err
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	need := map[string]bool{"state": opts.SaveState == nil, "app": opts.InvokeApp == nil, "pubsub": opts.Publish == nil}
	if need[spec.Sink.Type] {
		return nil, fmt.Errorf("%w %q: spec.sink: a %s sink needs the runtime (mecha run)", ErrSpec, spec.Name, spec.Sink.Type)
	}
	brokers := spec.Source.Brokers
	if brokers == "" {
		brokers = opts.Brokers
	}
	r := &Runner{spec: spec, pipe: pipe, topics: []string{spec.Source.Topic},
		offsets: map[srcPart]int64{}, opts: opts, lag: map[srcPart]int64{}, wmNow: math.MinInt64}
	switch {
	case opts.Broker != nil && (spec.Source.Brokers == "" || spec.Source.Brokers == opts.Broker.Addr()):
		r.local = opts.Broker
	case brokers == "":
		return nil, fmt.Errorf("%w %q: spec.source.brokers: not set, and there is no embedded broker (--broker=false)", ErrSpec, spec.Name)
	default:
		r.brokers = strings.Split(brokers, ",")
	}
	if spec.Join != nil {
		r.topics = append(r.topics, spec.Join.Topic)
	}
	r.ctl.sampling = 1
	r.ctl.rateLimit = spec.Source.RateLimit
	o := spec.Overload
	r.ctrl = overload.Controller{Thresholds: overload.Thresholds{MaxBacklog: o.MaxBacklog, MaxLagMs: o.MaxLag.Milliseconds(),
		MaxCPU: o.MaxCPU, MaxGCPauseMs: float64(o.MaxGCPause.Microseconds()) / 1000}}
	r.store = opts.Checkpoints
	if r.store == nil && opts.DataDir != "" {
		r.store = FileCheckpoints{Path: filepath.Join(opts.DataDir, spec.Name, "checkpoint.json")}
	}
	if r.store != nil {
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
	if r.store != nil {
		if err := r.restore(ctx); err != nil {
			return err
		}
	}
	if r.local != nil {
		r.cluster = localCluster{inproc.New(r.local, inproc.Options{ClientID: "mecha-stream-" + r.spec.Name})}
	} else {
		var mech sasl.Mechanism
		if r.spec.Source.Brokers == "" {
			mech = r.opts.SASL // the runtime's broker, with its credentials
		}
		rc, err := newRemoteCluster(r.brokers, mech)
		if err != nil {
			return err
		}
		r.cluster = rc
	}
	defer r.cluster.close()
	start := kgo.NewOffset().AtStart()
	if r.spec.Source.StartOffset == "latest" {
		start = kgo.NewOffset().AtEnd()
	}
	from := map[string]map[int32]kgo.Offset{}
	for _, topic := range r.topics {
		parts, err := r.partitions(ctx, topic)
		if err != nil {
			return err
		}
		from[topic] = map[int32]kgo.Offset{}
		for _, p := range parts {
			// Every partition holds the watermark back until it has data,
			// so a partition read later does not find its events late.
			r.pipe.AddPartition(topic, p)
			if o, ok := r.offsets[srcPart{topic, p}]; ok {
				from[topic][p] = kgo.NewOffset().At(o)
			} else {
				from[topic][p] = start
			}
		}
	}
	var err error
	if r.src, err = r.cluster.consume(from); err != nil {
		return err
	}
	defer r.src.Close()
	if r.sinkEnds != nil {
		if err := r.loadWritten(ctx); err != nil {
			return err
		}
	}
	interval := r.spec.Checkpoint.Interval.Duration
	if interval == 0 {
		interval = 10 * time.Second
	}
	last := time.Now()
	idle := r.pipe.idle
	var limiter *rate.Limiter
	paused := false
	healthEvery := r.spec.Overload.Interval.Duration
	if healthEvery == 0 {
		healthEvery = time.Second
	}
	usage := newUsage()
	rateAt, rateIn, rateOut := last, int64(0), int64(0)
	var batch []Record
	// setLimit applies a rate limit (records per second; 0: none) to the
	// limiter.
	setLimit := func(perSecond float64) {
		r.ctrl.Static = perSecond
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
	}
	for {
		c := r.ctl.snapshot()
		if c.paused != paused {
			paused = c.paused
			if paused {
				r.src.PauseFetchTopics(r.topics...)
			} else {
				r.src.ResumeFetchTopics(r.topics...)
			}
		}
		setLimit(c.rateLimit)
		// Poll no longer than the time to the next checkpoint, so that an
		// idle job still checkpoints what it processed, nor much longer
		// than the idle timeout, so that idle partitions release the
		// watermark. Under a rate limit, take no more than a tenth of a
		// second's worth, so that health, control and checkpoints keep
		// their pace while the limiter holds the job back.
		wait := min(idle/2, time.Second, healthEvery)
		if c.checkpoints {
			wait = min(wait, max(time.Until(last.Add(interval)), time.Millisecond))
		}
		maxRecs := -1
		if limiter != nil {
			maxRecs = limiter.Burst()
		}
		pctx, cancel := context.WithTimeout(ctx, wait)
		fs := r.src.PollRecords(pctx, maxRecs)
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
		// Sampling as it is now, after the poll: a change made while it
		// waited applies to what it returned.
		sc := r.ctl.snapshot()
		batch = batch[:0]
		sampledOut := int64(0)
		fs.EachRecord(func(rec *kgo.Record) {
			if sc.sampling < 1 && !sampled(rec.Offset, sc.sampling) {
				sampledOut++
			} else {
				batch = append(batch, Record{Topic: rec.Topic, Partition: rec.Partition, Offset: rec.Offset,
					Timestamp: rec.Timestamp.UnixMilli(), Key: rec.Key, Value: rec.Value, Headers: rec.Headers})
			}
			r.offsets[srcPart{rec.Topic, rec.Partition}] = rec.Offset + 1
		})
		// The rate limit as it is now too: a limit set while the poll
		// waited paces what it returned, a burst's worth at a time.
		setLimit(sc.rateLimit)
		if limiter != nil {
			for n := len(batch) + int(sampledOut); n > 0 && ctx.Err() == nil; n -= limiter.Burst() {
				_ = limiter.WaitN(ctx, min(n, limiter.Burst()))
			}
		}
		// Partitions that went idle may have let the watermark move.
		now := time.Now()
		out := r.pipe.Round(batch, now)
		counts := r.pipe.takeCounts()
		r.mu.Lock()
		r.counts.In += counts.In + sampledOut
		r.counts.SampledOut += sampledOut
		r.counts.Filtered += counts.Filtered
		r.counts.Late += counts.Late
		r.counts.DeadLettered += counts.DeadLettered
		r.counts.Out += counts.Out
		r.mu.Unlock()
		r.deliver(ctx, out)
		if ctx.Err() != nil {
			return nil
		}
		wm := r.pipe.Watermark()
		r.mu.Lock()
		fs.EachPartition(func(p kgo.FetchTopicPartition) {
			if p.HighWatermark >= 0 {
				k := srcPart{p.Topic, p.Partition}
				r.lag[k] = max(0, p.HighWatermark-r.offsets[k])
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
		// A trigger that came while the poll waited counts now: the
		// checkpoint is at the end of the poll under way, not the next.
		trigger := r.ctl.snapshot().trigger
		if (c.checkpoints && time.Since(last) >= interval) || (trigger && r.store != nil) {
			if trigger {
				r.ctl.mu.Lock()
				r.ctl.trigger = false
				r.ctl.mu.Unlock()
			}
			if err := r.checkpoint(ctx); errors.Is(err, ErrSuperseded) {
				return fmt.Errorf("stream: job %s stops: %w", r.spec.Name, err)
			} else if err != nil {
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
	u := &usage{at: time.Now(), cpuTime: procstat.CPU()}
	var st debug.GCStats
	debug.ReadGCStats(&st)
	u.numGC = st.NumGC
	return u
}

// cpu is the cores used since the last call.
func (u *usage) cpu(now time.Time) float64 {
	c := procstat.CPU()
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

// sampled keeps a record by its offset: the same records on a replay.
func sampled(offset int64, share float64) bool {
	h := uint64(offset) * 0x9E3779B97F4A7C15
	return float64(h>>11)/float64(1<<53) < share
}

// partitions returns a topic's partitions, creating the topic (with the
// cluster's defaults) when it does not exist yet, and retrying while the
// cluster cannot be reached.
func (r *Runner) partitions(ctx context.Context, topic string) ([]int32, error) {
	bo := backoff.Policy{Initial: 100 * time.Millisecond, Max: 5 * time.Second}.New()
	for {
		parts, err := r.cluster.partitions(ctx, topic)
		if err == nil && len(parts) > 0 {
			return parts, nil
		}
		if err != nil {
			r.opts.Logger.Warn("stream: source topic not reachable; retrying", "job", r.spec.Name, "topic", topic, "err", err)
		}
		if err := bo.Wait(ctx); err != nil {
			return nil, err
		}
	}
}
