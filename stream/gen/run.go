package gen

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Mode is what Run writes.
type Mode string

// The modes (see the package doc).
const (
	ModeTemplate Mode = "template"
	ModeReplay   Mode = "replay"
	ModeDouble   Mode = "double"
)

// CopyHeader is the record header doubling sets on each copy: its index,
// "0" for the first.
const CopyHeader = "mecha-copy"

// flushGrace is how long records buffered when ctx ends may take to
// reach the broker before Run gives up on them.
const flushGrace = 10 * time.Second

// Config is one run of the generator. Validate names a bad field by the
// flag of `mecha stream gen` that sets it.
type Config struct {
	Mode Mode
	// Brokers are the seed brokers, host:port each.
	Brokers []string
	// Topic receives the records. A missing topic is created: with the
	// source's partition count when copying a topic, else with the
	// broker's default.
	Topic string
	// Rate caps the records written per second (0: as fast as the broker
	// takes them). It paces in batches, so high rates are reachable.
	Rate float64
	// Count stops the run after this many records (copies included);
	// 0 writes until ctx ends (template) or the source's end (replay,
	// doubling).
	Count int64

	// Template makes the records of ModeTemplate.
	Template *Template
	// Seed seeds the template's generator; 0 picks one from the clock,
	// and Stats.Seed tells which.
	Seed uint64
	// Key names the top-level template field whose value keys each
	// record; empty writes records without a key.
	Key string

	// FromTopic is the source of ModeReplay and ModeDouble, read from its
	// start offsets to its end offsets as of the start of the run.
	FromTopic string
	// Speedup divides the gaps between the source's record timestamps
	// when replaying (0: no pacing).
	Speedup float64
	// Retime sets each replayed record's timestamp to start +
	// (orig − first) / Speedup, so that event time is compressed too;
	// otherwise records keep their timestamps.
	Retime bool

	// Copies is how many times doubling writes each source record.
	Copies int
	// Vary names a top-level JSON field of the source's values that copy
	// i > 0 suffixes with "-i" (as a string), so that its distinct count
	// grows with the copies; a key equal to that field's value gets the
	// same suffix. Empty writes identical copies.
	Vary string

	// Logger takes warnings; nil discards them.
	Logger *slog.Logger
	// ClientOptions are added to the franz-go clients' (TLS, SASL, …).
	ClientOptions []kgo.Opt
}

// ConfigError is an invalid Config; Field is the flag name of the field.
type ConfigError struct {
	Field   string
	Problem string
}

// Error reads "gen: <field>: <problem>".
func (e *ConfigError) Error() string { return "gen: " + e.Field + ": " + e.Problem }

// Validate reports the first bad field, as a *ConfigError.
func (c *Config) Validate() error {
	bad := func(field, format string, args ...any) error {
		return &ConfigError{Field: field, Problem: fmt.Sprintf(format, args...)}
	}
	if len(c.Brokers) == 0 {
		return bad("brokers", "required")
	}
	if c.Topic == "" {
		return bad("topic", "required")
	}
	if c.Rate < 0 || math.IsNaN(c.Rate) || math.IsInf(c.Rate, 0) {
		return bad("rate", "want a number of records per second ≥ 0, got %v", c.Rate)
	}
	if c.Count < 0 {
		return bad("count", "want ≥ 0, got %d", c.Count)
	}
	template, replay, double := c.Mode == ModeTemplate, c.Mode == ModeReplay, c.Mode == ModeDouble
	switch {
	case !template && !replay && !double:
		return bad("mode", "want template, replay or double, got %q", c.Mode)
	case template && c.Template == nil:
		return bad("template", "required")
	case !template && c.Template != nil:
		return bad("template", "not with from-topic")
	case !template && c.Key != "":
		return bad("key", "template mode only")
	case !template && c.Seed != 0:
		return bad("seed", "template mode only")
	case template && c.FromTopic != "":
		return bad("from-topic", "not with a template")
	case !template && c.FromTopic == "":
		return bad("from-topic", "required to replay or double a topic")
	case !template && c.FromTopic == c.Topic:
		return bad("topic", "must differ from from-topic %q", c.FromTopic)
	case !replay && c.Speedup != 0:
		return bad("speedup", "replay only (from-topic without copies)")
	case !replay && c.Retime:
		return bad("retime", "replay only (from-topic without copies)")
	case replay && (c.Speedup < 0 || math.IsNaN(c.Speedup) || math.IsInf(c.Speedup, 0)):
		return bad("speedup", "want ≥ 0, got %v", c.Speedup)
	case replay && c.Retime && c.Speedup == 0:
		return bad("retime", "needs a speedup > 0")
	case !double && c.Copies != 0:
		return bad("copies", "doubling only (with from-topic)")
	case !double && c.Vary != "":
		return bad("vary", "doubling only (with copies)")
	case double && c.Copies < 1:
		return bad("copies", "want ≥ 1, got %d", c.Copies)
	}
	if template && c.Key != "" {
		if _, err := c.Template.NewGenerator(1, c.Key); err != nil {
			return bad("key", "%s", strings.TrimPrefix(err.Error(), "key "))
		}
	}
	return nil
}

// Stats are what a run wrote.
type Stats struct {
	// Records the broker acknowledged, and the bytes of their values.
	Records, Bytes int64
	// Elapsed runs from the start of writing (after the topics are
	// checked) to the end of the final flush.
	Elapsed time.Duration
	// Seed is the template generator's seed.
	Seed uint64
	// Unvaried counts source records doubling copied unchanged because
	// their value has no Vary field (or is not a JSON object).
	Unvaried int64
}

// PerSecond is the records written per second.
func (s Stats) PerSecond() float64 {
	if s.Elapsed <= 0 {
		return 0
	}
	return float64(s.Records) / s.Elapsed.Seconds()
}

// Run writes records as cfg says until Count, the source's end or ctx's
// end. Ending ctx is a normal stop: Run flushes what it produced (for up
// to 10 s) and returns the stats with no error. It fails on the first
// record the broker refuses.
func Run(ctx context.Context, cfg Config) (Stats, error) {
	if err := cfg.Validate(); err != nil {
		return Stats{}, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	opts := append([]kgo.Opt{kgo.SeedBrokers(cfg.Brokers...)}, cfg.ClientOptions...)
	admCl, err := kgo.NewClient(opts...)
	if err != nil {
		return Stats{}, err
	}
	defer admCl.Close()
	adm := kadm.NewClient(admCl)
	if cfg.Mode == ModeTemplate {
		return runTemplate(ctx, cfg, adm)
	}
	return runCopy(ctx, cfg, adm)
}

// runTemplate writes generated records.
func runTemplate(ctx context.Context, cfg Config, adm *kadm.Client) (Stats, error) {
	seed := cfg.Seed
	for seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	g, err := cfg.Template.NewGenerator(seed, cfg.Key)
	if err != nil { // Validate checked the key
		return Stats{}, err
	}
	if _, err := ensureTopic(ctx, adm, cfg.Topic, -1); err != nil {
		return Stats{}, err
	}
	w, err := newWriter(ctx, cfg)
	if err != nil {
		return Stats{}, err
	}
	// Values are cut from slabs: one allocation per many records, and
	// the client holds each slab until its records are acknowledged.
	const slabSize = 256 << 10
	var slab []byte
	var recs []kgo.Record
	for w.more() {
		if cap(slab)-len(slab) < 4<<10 {
			slab = make([]byte, 0, slabSize)
		}
		if len(recs) == 0 {
			recs = make([]kgo.Record, 1024)
		}
		start := len(slab)
		var key []byte
		slab, key = g.Append(slab)
		r := &recs[0]
		recs = recs[1:]
		r.Topic, r.Key, r.Value = cfg.Topic, key, slab[start:len(slab):len(slab)]
		w.produce(r)
	}
	st, err := w.finish()
	st.Seed = seed
	return st, err
}

// runCopy replays or doubles the source topic.
func runCopy(ctx context.Context, cfg Config, adm *kadm.Client) (Stats, error) {
	src, err := openSource(ctx, cfg, adm)
	if err != nil {
		return Stats{}, err
	}
	defer src.close()
	nDst, err := ensureTopic(ctx, adm, cfg.Topic, int32(len(src.parts)))
	if err != nil {
		return Stats{}, err
	}
	w, err := newWriter(ctx, cfg, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		return Stats{}, err
	}
	route := router(cfg.Topic, len(src.parts), nDst)
	var st Stats
	var wall0 time.Time // when the first record went out
	var ts0 time.Time   // its timestamp
	var readErr error
	for {
		r, err := src.next(ctx)
		if err != nil && ctx.Err() == nil {
			readErr = fmt.Errorf("gen: read %s: %w", cfg.FromTopic, err)
		}
		if err != nil || r == nil {
			break // ctx ended, or the source is read to its end
		}
		if wall0.IsZero() {
			wall0, ts0 = time.Now(), r.Timestamp
		}
		if cfg.Mode == ModeReplay {
			if !w.more() {
				break
			}
			ts := r.Timestamp
			if cfg.Speedup > 0 {
				due := wall0.Add(time.Duration(float64(r.Timestamp.Sub(ts0)) / cfg.Speedup))
				if w.sleepUntil(due) != nil {
					break
				}
				if cfg.Retime {
					ts = time.UnixMilli(wall0.UnixMilli() + int64(float64(r.Timestamp.UnixMilli()-ts0.UnixMilli())/cfg.Speedup))
				}
			}
			w.produce(&kgo.Record{Topic: cfg.Topic, Partition: route(r.Partition, r.Key), Key: r.Key, Value: r.Value,
				Headers: r.Headers, Timestamp: ts})
			continue
		}
		v := newVariant(r, cfg.Vary)
		if cfg.Vary != "" && !v.found {
			st.Unvaried++
			if st.Unvaried == 1 {
				cfg.Logger.Warn("gen: a source record has no such top-level field; its copies are identical",
					"vary", cfg.Vary, "topic", cfg.FromTopic, "partition", r.Partition, "offset", r.Offset)
			}
		}
		stopped := false
		for i := 0; i < cfg.Copies; i++ {
			if !w.more() {
				stopped = true
				break
			}
			key, value := v.copy(i)
			hs := make([]kgo.RecordHeader, len(r.Headers), len(r.Headers)+1)
			copy(hs, r.Headers)
			hs = append(hs, kgo.RecordHeader{Key: CopyHeader, Value: []byte(strconv.Itoa(i))})
			w.produce(&kgo.Record{Topic: cfg.Topic, Partition: route(r.Partition, key), Key: key, Value: value,
				Headers: hs, Timestamp: r.Timestamp})
		}
		if stopped {
			break
		}
	}
	ws, err := w.finish()
	ws.Unvaried = st.Unvaried
	if err == nil {
		err = readErr
	}
	return ws, err
}

// router picks a target partition: the source's when the target has as
// many, else the hash of the key as Kafka's default partitioner does, or
// for a record without a key its source partition modulo the target's
// count, which keeps the order of each source partition.
func router(topic string, nSrc, nDst int) func(p int32, key []byte) int32 {
	if nDst >= nSrc {
		return func(p int32, _ []byte) int32 { return p }
	}
	hash := kgo.StickyKeyPartitioner(nil).ForTopic(topic)
	return func(p int32, key []byte) int32 {
		if key == nil {
			return p % int32(nDst)
		}
		return int32(hash.Partition(&kgo.Record{Key: key}, nDst))
	}
}

// ensureTopic returns topic's partition count, creating it with
// partitions (-1: the broker's default) when it is missing. It creates
// first and lists only when that fails: franz-go caches metadata for a
// few seconds, so a listing before the creation would hide the new topic.
func ensureTopic(ctx context.Context, adm *kadm.Client, topic string, partitions int32) (int, error) {
	resp, cerr := adm.CreateTopic(ctx, partitions, -1, nil, topic)
	if cerr == nil {
		if resp.NumPartitions > 0 {
			return int(resp.NumPartitions), nil
		}
		if partitions > 0 {
			return int(partitions), nil
		}
	}
	// It exists already, or creating is not allowed here (a real
	// cluster may refuse it and still let us write).
	details, err := adm.ListTopics(ctx, topic)
	if err != nil {
		return 0, fmt.Errorf("gen: list topic %s: %w", topic, err)
	}
	if d, ok := details[topic]; ok && d.Err == nil && len(d.Partitions) > 0 {
		return len(d.Partitions), nil
	}
	if cerr != nil && !errors.Is(cerr, kerr.TopicAlreadyExists) {
		return 0, fmt.Errorf("gen: create topic %s: %w", topic, cerr)
	}
	return 0, fmt.Errorf("gen: topic %s: created, but the broker does not list it", topic)
}

// writer produces records, paces them, and counts what the broker
// acknowledges. The goroutine that calls more and produce owns produced
// and the pacer; the promise updates the atomics.
type writer struct {
	cl    *kgo.Client
	count int64
	pace  pacer
	// ctx is the caller's: its end stops the records. pctx is the
	// producer's: it outlives ctx by flushGrace so that buffered
	// records still reach the broker, and ends early with the first
	// produce error as its cause.
	ctx       context.Context
	pctx      context.Context
	pcancel   context.CancelCauseFunc
	stopGrace func() bool
	produced  int64
	acked     atomic.Int64
	bytes     atomic.Int64
	start     time.Time
	promise   func(*kgo.Record, error)
}

// errFlushTimeout ends the producer when buffered records did not reach
// the broker within flushGrace of ctx's end.
var errFlushTimeout = fmt.Errorf("gen: records still unacknowledged %s after the stop", flushGrace)

func newWriter(ctx context.Context, cfg Config, opts ...kgo.Opt) (*writer, error) {
	opts = append([]kgo.Opt{kgo.SeedBrokers(cfg.Brokers...)}, opts...)
	cl, err := kgo.NewClient(append(opts, cfg.ClientOptions...)...)
	if err != nil {
		return nil, err
	}
	w := &writer{cl: cl, count: cfg.Count, ctx: ctx, start: time.Now()}
	w.pace = pacer{rate: cfg.Rate, every: max(1, int64(cfg.Rate/1000)), start: w.start}
	w.pctx, w.pcancel = context.WithCancelCause(context.WithoutCancel(ctx))
	w.stopGrace = context.AfterFunc(ctx, func() {
		t := time.NewTimer(flushGrace)
		defer t.Stop()
		select {
		case <-t.C:
			w.pcancel(errFlushTimeout)
		case <-w.pctx.Done():
		}
	})
	w.promise = func(r *kgo.Record, err error) {
		if err != nil {
			w.pcancel(fmt.Errorf("gen: produce to %s: %w", r.Topic, err))
			return
		}
		w.acked.Add(1)
		w.bytes.Add(int64(len(r.Value)))
	}
	return w, nil
}

// more reports whether to write another record, first waiting while the
// run is ahead of its rate.
func (w *writer) more() bool {
	if w.count > 0 && w.produced >= w.count {
		return false
	}
	if w.produced&255 == 0 && (w.ctx.Err() != nil || w.pctx.Err() != nil) {
		return false
	}
	return w.pace.take(w.ctx) == nil
}

func (w *writer) produce(r *kgo.Record) {
	w.produced++
	w.cl.Produce(w.pctx, r, w.promise)
}

// sleepUntil waits for t or the end of ctx.
func (w *writer) sleepUntil(t time.Time) error {
	d := time.Until(t)
	if d < time.Millisecond {
		return w.ctx.Err()
	}
	return sleep(w.ctx, d)
}

// finish flushes, closes the client, and returns the stats and the first
// produce error.
func (w *writer) finish() (Stats, error) {
	_ = w.cl.Flush(w.pctx) // pctx's cause says why it ended early
	st := Stats{Records: w.acked.Load(), Bytes: w.bytes.Load(), Elapsed: time.Since(w.start)}
	cause := context.Cause(w.pctx)
	w.stopGrace()
	w.pcancel(nil)
	w.cl.Close()
	return st, cause
}

// pacer spreads records evenly at rate per second. It checks the clock
// once per every records (a millisecond's worth), so that high rates
// cost little; one that fell more than a second behind (the broker
// pushed back) starts over instead of bursting to catch up.
type pacer struct {
	rate  float64
	every int64
	start time.Time
	n     int64
}

func (p *pacer) take(ctx context.Context) error {
	if p.rate <= 0 {
		return nil
	}
	p.n++
	if (p.n-1)%p.every != 0 {
		return nil
	}
	due := p.start.Add(time.Duration(float64(p.n-1) / p.rate * float64(time.Second)))
	now := time.Now()
	if behind := now.Sub(due); behind > time.Second {
		p.start = p.start.Add(behind)
		return ctx.Err()
	}
	if d := due.Sub(now); d > 0 {
		return sleep(ctx, d)
	}
	return ctx.Err()
}

// sleep waits for d or the end of ctx.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
