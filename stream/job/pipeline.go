package job

import (
	"fmt"
	"hash/maphash"
	"math"
	"sort"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"mecha/stream/agg"
	"mecha/stream/window"
)

// Record is one source record as a pipeline takes it.
type Record struct {
	Topic     string
	Partition int32
	Offset    int64
	// Timestamp is the record's time in milliseconds since the epoch: the
	// event time when the job names no event-time field.
	Timestamp int64
	Key       []byte
	Value     []byte
	Headers   []kgo.RecordHeader
	// Fields, when set, is the record already decoded (a generator's);
	// Value is not read then.
	Fields map[string]any
}

// ResultKind says what a Result is.
type ResultKind uint8

// The result kinds.
const (
	// Emitted is a result for the sink: a fired window, a joined pair, or
	// a record passed through.
	Emitted ResultKind = iota
	// DeadLetter is a source record that failed, for the dead-letter topic.
	DeadLetter
	// Late is a source record too late for its windows, for the late topic.
	Late
)

// Result is what a pipeline hands its sinks.
type Result struct {
	Kind ResultKind
	Key  string
	// Windowed is set for window results and joined pairs.
	Windowed bool
	Window   window.Window
	// Value is the aggregate's value, a joined pair (JoinPair), or the
	// mapped fields of a record passed through.
	Value any
	// Update marks a window fired again by a late event.
	Update bool
	// Src is the source record of a dead letter, a late event or a record
	// passed through.
	Src *Record
	// Err is why a dead letter failed.
	Err error
}

// JoinPair is one result of a join.
type JoinPair struct {
	Left  map[string]any `json:"left"`
	Right map[string]any `json:"right"`
}

// srcPart names a source partition.
type srcPart struct {
	topic     string
	partition int32
}

// partState is a source partition's watermark and when it last had a
// record. The task that reads the partition owns it during a round; the
// pipeline's caller reads it between rounds.
type partState struct {
	wm     window.Watermark
	active time.Time
	task   int
}

// Pipeline is a job past its source: decode, filter, map, key-by, the
// keyed window (or join) spread over the job's tasks by key hash, and the
// watermark. It is fed in rounds; within a round each task works on its
// own partitions and keys, in parallel, and the watermark moves once, at
// the end of the round (as Flink's periodic watermarks do): an event is
// late when its windows were past the allowed lateness before the round.
type Pipeline struct {
	spec    Spec
	prog    *program
	agg     *agg.Aggregator // nil without a window, or with a join
	encode  func(agg.Accumulator) ([]byte, error)
	decode  func([]byte) (agg.Accumulator, error)
	tasks   []*task
	parts   map[srcPart]*partState
	delay   int64 // max out-of-orderness, ms
	idle    time.Duration
	started time.Time
	seed    maphash.Seed
	// wm is the watermark the last round advanced to.
	wm int64
	// spare is the array of the results collect handed out last, reused
	// by the next round's.
	spare []Result
}

// task is one of a job's tasks: an evaluator for the partitions it reads,
// and the window state of the keys that hash to it. Its fields are used
// by one goroutine at a time, in the phases of a round.
type task struct {
	idx  int
	dec  decoder
	eval evaluator
	op   *window.Operator // nil without a window
	recs []Record         // this round's records of the partitions it reads
	// out[i] holds what task i must add to its window this round.
	out [][]event
	res []Result
	// spare is res's array once its round is over, reused by the next
	// (results are valid until the next round).
	spare  []Result
	counts Counts
}

// event is a record past key-by, on its way to the task of its key.
type event struct {
	key string
	ts  int64
	in  agg.Input
	src *Record
}

// NewPipeline builds the pipeline of a valid spec.
func NewPipeline(spec Spec) (*Pipeline, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	prog, err := compile(spec)
	if err != nil {
		return nil, err
	}
	idle := spec.Source.IdleTimeout.Duration
	if idle == 0 {
		idle = 5 * time.Second
	}
	p := &Pipeline{spec: spec, prog: prog, parts: map[srcPart]*partState{}, delay: spec.Source.MaxOutOfOrderness.Milliseconds(),
		idle: idle, started: time.Now(), seed: maphash.MakeSeed(), wm: math.MinInt64}
	var factory agg.Factory
	switch {
	case spec.Window.Type == "":
	case spec.Join != nil:
		factory = func() agg.Accumulator { return &joinAcc{} }
		p.encode, p.decode = encodeJoin, decodeJoin
	default:
		if p.agg, err = agg.NewAggregator(agg.Spec{Kind: agg.Kind(spec.Aggregate.Type), N: spec.Aggregate.N}); err != nil {
			return nil, err
		}
		factory = p.agg.New
		p.encode, p.decode = p.agg.Encode, p.agg.Decode
	}
	n := spec.tasks()
	only := decodedFields(spec, prog)
	for i := range n {
		t := &task{idx: i, dec: newDecoder(only), eval: evaluator{p: prog}, out: make([][]event, n)}
		if factory != nil {
			if t.op, err = window.NewOperator(spec.windowSpec(), factory); err != nil {
				return nil, err
			}
		}
		p.tasks = append(p.tasks, t)
	}
	return p, nil
}

// AddPartition registers a source partition before its first record, so
// that it holds the watermark back until it has data (or goes idle).
// Partitions are spread over the tasks in the order they are added.
func (p *Pipeline) AddPartition(topic string, partition int32) {
	k := srcPart{topic, partition}
	if p.parts[k] == nil {
		p.parts[k] = &partState{wm: window.Watermark{Delay: p.delay}, task: len(p.parts) % len(p.tasks)}
	}
}

// keyTask is the task that owns key.
func (p *Pipeline) keyTask(key string) int {
	if len(p.tasks) == 1 {
		return 0
	}
	return int(maphash.String(p.seed, key) % uint64(len(p.tasks)))
}

// stableKeyTask places a key for a checkpoint restore; maphash seeds
// differ between processes, and a restore must land each key where this
// process will route it, so it uses keyTask too.
func (p *Pipeline) stableKeyTask(key string) int { return p.keyTask(key) }

// Round processes a batch of records and then moves the watermark, and
// returns the results in order: per task, the records it passed through,
// dead letters and late events, then its window results. Results point at
// the records (or, with several tasks, at the pipeline's copies of them):
// they are valid until the next Round, and the records must not change
// before then.
func (p *Pipeline) Round(recs []Record, now time.Time) []Result {
	for i := range recs {
		k := srcPart{recs[i].Topic, recs[i].Partition}
		if p.parts[k] == nil {
			p.AddPartition(k.topic, k.partition)
		}
	}
	for _, t := range p.tasks {
		clear(t.spare) // let go of last round's records and values
		t.res, t.spare = t.spare[:0], nil
	}
	if len(p.tasks) == 1 {
		t := p.tasks[0]
		t.recs = recs
		p.read(t, now)
		p.wm = max(p.wm, p.watermark(now))
		p.window(t)
		t.recs = nil
		res := t.res
		t.res, t.spare = nil, res
		return res
	}
	for _, t := range p.tasks {
		t.recs = t.recs[:0]
	}
	for i := range recs {
		t := p.tasks[p.parts[srcPart{recs[i].Topic, recs[i].Partition}].task]
		t.recs = append(t.recs, recs[i])
	}
	p.parallel(func(t *task) { p.read(t, now) })
	p.wm = max(p.wm, p.watermark(now))
	p.parallel(p.window)
	return p.collect()
}

// collect takes every task's results, in task order.
func (p *Pipeline) collect() []Result {
	clear(p.spare)
	res := p.spare[:0]
	for _, t := range p.tasks {
		res = append(res, t.res...)
		clear(t.res)
		t.res, t.spare = nil, t.res[:0]
	}
	p.spare = res
	return res
}

func (p *Pipeline) parallel(f func(*task)) {
	var wg sync.WaitGroup
	for _, t := range p.tasks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f(t)
		}()
	}
	wg.Wait()
}

// read is a round's first phase on one task: its records through decode,
// filter, map and key-by, to the task of their key.
func (p *Pipeline) read(t *task, now time.Time) {
	for i := range t.recs {
		rec := &t.recs[i]
		t.counts.In++
		ev, keep, err := p.apply(t, rec)
		if err != nil {
			t.counts.DeadLettered++
			t.res = append(t.res, Result{Kind: DeadLetter, Src: rec, Err: err})
			continue
		}
		if !keep {
			t.counts.Filtered++
			continue
		}
		ps := p.parts[srcPart{rec.Topic, rec.Partition}]
		ps.wm.Observe(ev.ts)
		ps.active = now
		if t.op == nil {
			t.counts.Out++
			t.res = append(t.res, Result{Kind: Emitted, Key: ev.key, Value: ev.in.Record, Src: rec})
			continue
		}
		dst := p.keyTask(ev.key)
		t.out[dst] = append(t.out[dst], ev)
	}
}

// window is a round's second phase on one task: the events of its keys
// into its windows, then the watermark.
func (p *Pipeline) window(t *task) {
	if t.op == nil {
		return
	}
	for _, src := range p.tasks {
		evs := src.out[t.idx]
		for i := range evs {
			ev := &evs[i]
			updates, late := t.op.Add(ev.key, ev.ts, ev.in)
			if late {
				t.counts.Late++
				t.res = append(t.res, Result{Kind: Late, Key: ev.key, Src: ev.src})
			}
			p.emit(t, updates)
		}
		clear(evs)
		src.out[t.idx] = evs[:0]
	}
	p.emit(t, t.op.Advance(p.wm))
}

func (p *Pipeline) emit(t *task, results []window.Result) {
	for _, w := range results {
		if pairs, ok := w.Value.([]JoinPair); ok {
			for _, pair := range pairs {
				t.counts.Out++
				t.res = append(t.res, Result{Kind: Emitted, Key: w.Key, Windowed: true, Window: w.Window, Value: pair, Update: w.Update})
			}
			continue
		}
		t.counts.Out++
		t.res = append(t.res, Result{Kind: Emitted, Key: w.Key, Windowed: true, Window: w.Window, Value: w.Value, Update: w.Update})
	}
}

// apply runs one record through decode and the job's expressions.
func (p *Pipeline) apply(t *task, rec *Record) (ev event, keep bool, err error) {
	fields := rec.Fields
	if fields == nil {
		if fields, err = t.dec.decode(rec.Value); err != nil {
			return ev, false, fmt.Errorf("decode: %v", err)
		}
	}
	right := p.spec.Join != nil && rec.Topic == p.spec.Join.Topic
	out, key, in, keep, err := t.eval.apply(fields, right)
	if err != nil || !keep {
		return ev, keep, err
	}
	ev = event{key: key, ts: rec.Timestamp, in: in, src: rec}
	if p.spec.Join != nil {
		ev.in.Record, ev.in.Right = out, right
	}
	if p.spec.Window.Type == "" {
		ev.in.Record = out
		if p.prog.keyBy == nil {
			ev.key = string(rec.Key)
		}
	}
	f := p.spec.Source.EventTimeField
	if right && p.spec.Join.EventTimeField != "" {
		f = p.spec.Join.EventTimeField
	}
	if f != "" {
		v, ok := toFloat(out[f])
		if !ok {
			v, ok = toFloat(fields[f])
		}
		if !ok {
			return ev, false, fmt.Errorf("event time: field %q is not a number", f)
		}
		ev.ts = int64(v)
	}
	return ev, true, nil
}

// watermark is the lowest watermark of the partitions that are not idle;
// when every partition is idle, the highest (nothing is coming).
func (p *Pipeline) watermark(now time.Time) int64 {
	low, high, anyActive := int64(math.MaxInt64), int64(math.MinInt64), false
	for _, ps := range p.parts {
		cur := ps.wm.Current()
		high = max(high, cur)
		last := ps.active
		if last.IsZero() {
			last = p.started
		}
		if now.Sub(last) > p.idle {
			continue
		}
		anyActive = true
		low = min(low, cur)
	}
	if !anyActive {
		return high
	}
	return low
}

// Drain fires every window still open, as the end of a bounded input
// does (Flink's final watermark), and returns the results.
func (p *Pipeline) Drain() []Result {
	p.wm = math.MaxInt64
	p.parallel(p.window)
	return p.collect()
}

// Watermark is the watermark of the last round.
func (p *Pipeline) Watermark() int64 { return p.wm }

// takeCounts returns the tasks' counts since the last call.
func (p *Pipeline) takeCounts() Counts {
	var c Counts
	for _, t := range p.tasks {
		c.In += t.counts.In
		c.Filtered += t.counts.Filtered
		c.Late += t.counts.Late
		c.DeadLettered += t.counts.DeadLettered
		c.Out += t.counts.Out
		t.counts = Counts{}
	}
	return c
}

// Panes is the number of windows holding state.
func (p *Pipeline) Panes() int {
	n := 0
	for _, t := range p.tasks {
		if t.op != nil {
			n += t.op.Panes()
		}
	}
	return n
}

// snapshot is the window state of every task, as one operator's: a
// checkpoint does not depend on the parallelism it was taken with.
func (p *Pipeline) snapshot() (window.State, []string, error) {
	st := window.State{Watermark: p.wm}
	for _, t := range p.tasks {
		if t.op == nil {
			continue
		}
		ts, err := t.op.Snapshot(p.encode)
		if err != nil {
			return st, nil, err
		}
		st.Watermark = ts.Watermark
		st.Panes = append(st.Panes, ts.Panes...)
	}
	sort.Slice(st.Panes, func(i, j int) bool {
		a, b := st.Panes[i], st.Panes[j]
		if a.Key != b.Key {
			return a.Key < b.Key
		}
		return a.Start < b.Start
	})
	var dict []string
	if p.agg != nil {
		dict = p.agg.DictionaryValues()
	}
	return st, dict, nil
}

// restore loads a snapshot, each window to the task that owns its key.
func (p *Pipeline) restore(st window.State, dict []string) error {
	if p.agg != nil {
		if err := p.agg.RestoreDictionary(dict); err != nil {
			return err
		}
	} else if len(dict) > 0 {
		return fmt.Errorf("the job has no count-distinct dictionary")
	}
	if p.tasks[0].op == nil {
		if len(st.Panes) > 0 {
			return fmt.Errorf("the job has no window, and the checkpoint has %d", len(st.Panes))
		}
		return nil
	}
	per := make([]window.State, len(p.tasks))
	for i := range per {
		per[i].Watermark = st.Watermark
	}
	for _, ps := range st.Panes {
		i := p.stableKeyTask(ps.Key)
		per[i].Panes = append(per[i].Panes, ps)
	}
	for i, t := range p.tasks {
		if err := t.op.Restore(per[i], p.decode); err != nil {
			return err
		}
	}
	p.wm = st.Watermark
	return nil
}
