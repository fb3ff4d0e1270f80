package job

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"mecha/internal/backoff"
)

// Headers a job puts on the records it writes to topics, when it
// checkpoints: a restarted job skips a record whose mecha-id it finds
// among those its job wrote after the checkpoint it resumes from.
const (
	HeaderJob = "mecha-job"
	HeaderID  = "mecha-id"
)

// encode is a result as a sink receives it: a window result as an
// Output, a record passed through as its mapped fields.
func (r *Runner) encode(res *Result) []byte {
	var v any = res.Value
	if res.Windowed {
		v = Output{Job: r.spec.Name, Key: res.Key, WindowStart: res.Window.Start, WindowEnd: res.Window.End, Value: res.Value, Update: res.Update}
	}
	b, err := json.Marshal(v)
	if err != nil {
		b, _ = json.Marshal(map[string]string{"job": r.spec.Name, "key": res.Key, "error": err.Error()})
	}
	return b
}

// resultID names a result the same way when a replay makes it again: a
// window result by its key, window and value, anything else by the
// source record it comes from.
func resultID(res *Result, value []byte) string {
	switch {
	case res.Kind == DeadLetter:
		return "d:" + origin(res.Src)
	case res.Kind == Late:
		return "l:" + origin(res.Src)
	case res.Windowed:
		h := fnv.New64a()
		h.Write(value)
		return "w:" + res.Key + ":" + strconv.FormatInt(res.Window.Start, 10) + ":" + strconv.FormatUint(h.Sum64(), 36)
	}
	return "r:" + origin(res.Src)
}

func origin(src *Record) string {
	return src.Topic + "/" + strconv.Itoa(int(src.Partition)) + "@" + strconv.FormatInt(src.Offset, 10)
}

// deliver hands a round's results to their sinks, backing off and
// retrying while a sink is down (100 ms doubling to 5 s), until it takes
// them or the job stops: the job waits rather than drop results, and
// does not read on (nor checkpoint) meanwhile.
func (r *Runner) deliver(ctx context.Context, out []Result) {
	if len(out) == 0 {
		return
	}
	var recs []*kgo.Record
	var entries []StateEntry
	var bodies [][]byte
	tag := r.store != nil
	toTopic := func(topic string, key, value []byte, headers []kgo.RecordHeader, res *Result) {
		if tag {
			id := resultID(res, value)
			if r.written[id] > 0 {
				r.written[id]--
				r.count(func(c *Counts) { c.Skipped++ })
				return
			}
			headers = append(headers, kgo.RecordHeader{Key: HeaderJob, Value: []byte(r.spec.Name)}, kgo.RecordHeader{Key: HeaderID, Value: []byte(id)})
		}
		recs = append(recs, &kgo.Record{Topic: topic, Key: key, Value: value, Headers: headers})
	}
	for i := range out {
		res := &out[i]
		switch res.Kind {
		case DeadLetter:
			r.opts.Logger.Warn("stream: record dead-lettered", "job", r.spec.Name, "topic", res.Src.Topic,
				"partition", res.Src.Partition, "offset", res.Src.Offset, "err", res.Err)
			if r.spec.DeadLetterTopic != "" {
				h := append(append([]kgo.RecordHeader(nil), res.Src.Headers...), kgo.RecordHeader{Key: "error", Value: []byte(res.Err.Error())},
					kgo.RecordHeader{Key: "source", Value: []byte(origin(res.Src))})
				toTopic(r.spec.DeadLetterTopic, res.Src.Key, res.Src.Value, h, res)
			}
			continue
		case Late:
			if r.spec.LateTopic != "" {
				toTopic(r.spec.LateTopic, res.Src.Key, res.Src.Value, append([]kgo.RecordHeader(nil), res.Src.Headers...), res)
			}
			continue
		}
		switch r.spec.Sink.Type {
		case "blackhole":
		case "stdout":
			if r.opts.Stdout != nil {
				fmt.Fprintf(r.opts.Stdout, "%s\n", r.encode(res))
			}
		case "state":
			key := r.spec.Name + ":" + res.Key
			if res.Windowed {
				key += ":" + strconv.FormatInt(res.Window.Start, 10)
			}
			entries = append(entries, StateEntry{Key: key, Value: r.encode(res)})
		case "app", "pubsub":
			bodies = append(bodies, r.encode(res))
		default:
			toTopic(r.spec.Sink.Topic, []byte(res.Key), r.encode(res), nil, res)
		}
	}
	store := r.spec.Sink.Store
	if store == "" {
		store = "statestore"
	}
	pubsub := r.spec.Sink.PubSub
	if pubsub == "" {
		pubsub = "pubsub"
	}
	bo := backoff.Policy{Initial: 100 * time.Millisecond, Max: 5 * time.Second}.New()
	for ctx.Err() == nil && (len(recs) > 0 || len(entries) > 0 || len(bodies) > 0) {
		var err error
		if len(recs) > 0 {
			if err = r.cluster.produce(ctx, recs...).FirstErr(); err == nil {
				recs = nil
			}
		}
		if err == nil && len(entries) > 0 {
			if err = r.opts.SaveState(ctx, store, entries); err == nil {
				entries = nil
			}
		}
		// One at a time, in order, each taken off once the app or the
		// pub/sub has it: a retry resends only what failed and after.
		for err == nil && len(bodies) > 0 {
			if r.spec.Sink.Type == "app" {
				err = r.opts.InvokeApp(ctx, r.spec.Sink.Route, bodies[0])
			} else {
				err = r.opts.Publish(ctx, pubsub, r.spec.Sink.Topic, bodies[0])
			}
			if err == nil {
				bodies = bodies[1:]
			}
		}
		if err == nil || ctx.Err() != nil {
			return
		}
		r.opts.Logger.Warn("stream: sink failed; retrying", "job", r.spec.Name, "sink", r.spec.Sink.Type, "err", err)
		_ = bo.Wait(ctx)
	}
}

// outputTopics are the topics the job writes.
func (r *Runner) outputTopics() []string {
	var ts []string
	if r.spec.Sink.Type == "topic" {
		ts = append(ts, r.spec.Sink.Topic)
	}
	for _, t := range []string{r.spec.DeadLetterTopic, r.spec.LateTopic} {
		if t != "" {
			ts = append(ts, t)
		}
	}
	return ts
}

// sinkOffsets are the end offsets of the output topics now; topics that
// do not exist yet have none.
func (r *Runner) sinkOffsets(ctx context.Context) (map[srcPart]int64, error) {
	ts := r.outputTopics()
	if len(ts) == 0 {
		return map[srcPart]int64{}, nil
	}
	return r.cluster.endOffsets(ctx, ts...)
}

// loadWritten reads what the job wrote to its output topics after its
// last checkpoint (from the end offsets the checkpoint recorded to the
// end now) and counts their ids, so that the replay skips them.
func (r *Runner) loadWritten(ctx context.Context) error {
	now, err := r.sinkOffsets(ctx)
	if err != nil {
		return fmt.Errorf("stream job %q: reading its output topics to skip what it wrote: %w", r.spec.Name, err)
	}
	from := map[string]map[int32]kgo.Offset{}
	remaining := 0
	for k, end := range now {
		start := r.sinkEnds[k] // a partition new since the checkpoint: all of it
		if end <= start {
			continue
		}
		if from[k.topic] == nil {
			from[k.topic] = map[int32]kgo.Offset{}
		}
		from[k.topic][k.partition] = kgo.NewOffset().At(start)
		remaining++
	}
	if r.written == nil { // else the checkpoint's, still to skip
		r.written = map[string]int{}
	}
	if remaining == 0 {
		return nil
	}
	cl, err := r.cluster.consume(from)
	if err != nil {
		return err
	}
	defer cl.Close()
	done := map[srcPart]bool{}
	for len(done) < remaining {
		fs := cl.PollRecords(ctx, 0)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		fs.EachRecord(func(rec *kgo.Record) {
			k := srcPart{rec.Topic, rec.Partition}
			if rec.Offset >= now[k] {
				return
			}
			var job, id string
			for _, h := range rec.Headers {
				switch h.Key {
				case HeaderJob:
					job = string(h.Value)
				case HeaderID:
					id = string(h.Value)
				}
			}
			if job == r.spec.Name && id != "" {
				r.written[id]++
			}
			if rec.Offset+1 >= now[k] {
				done[k] = true
			}
		})
	}
	n := 0
	for _, c := range r.written {
		n += c
	}
	r.opts.Logger.Info("stream: found records written after the checkpoint; the replay skips them", "job", r.spec.Name, "records", n)
	return nil
}

func (r *Runner) count(f func(*Counts)) {
	r.mu.Lock()
	f(&r.counts)
	r.mu.Unlock()
}
