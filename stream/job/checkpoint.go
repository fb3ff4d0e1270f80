package job

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"mecha/internal/fsutil"
	"mecha/stream/window"
)

// checkpointFile is a job's last checkpoint: where each source partition
// resumes, each partition's newest event time (its watermark), the window
// state of every task (as one operator's, so that a job can resume with
// another parallelism), the count-distinct dictionary, the end offsets
// of the topics the job writes, and the ids of results found written
// there that a replay has still to skip. It is written whole to a
// temporary file, fsynced and renamed, so a crash leaves the previous
// checkpoint or this one.
type checkpointFile struct {
	Version int       `json:"version"`
	Job     string    `json:"job"`
	Topic   string    `json:"topic"`
	Taken   time.Time `json:"taken"`
	// Offsets and EventTimes are version 1's, of the source topic only.
	Offsets    map[int32]int64 `json:"offsets,omitempty"`
	EventTimes map[int32]int64 `json:"eventTimes,omitempty"`
	// Sources is version 2's: every partition read (source and join).
	Sources    []position   `json:"sources,omitempty"`
	SinkEnds   []position   `json:"sinkEnds,omitempty"`
	Operator   window.State `json:"operator"`
	Dictionary []string     `json:"dictionary,omitempty"`
	// Written are the ids (mecha-id) of results that a restarted job
	// found on its output topics and that its replay has not made again
	// yet: a restart from this checkpoint skips them too.
	Written map[string]int `json:"written,omitempty"`
}

// position is where a partition stands.
type position struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	Offset    int64  `json:"offset"`
	// EventTime is the newest event time read, when HasEventTime.
	EventTime    int64 `json:"eventTime,omitempty"`
	HasEventTime bool  `json:"hasEventTime,omitempty"`
}

const checkpointVersion = 2

// CheckpointStore keeps a job's last checkpoint, where the job resumes
// from: a file in the data dir (FileCheckpoints), or, inside a broker
// cluster, the replicated Crux cluster, so that another runtime can
// resume the job when this one dies.
type CheckpointStore interface {
	// Load returns the last checkpoint, nil when there is none.
	Load(ctx context.Context) ([]byte, error)
	// Save replaces it; on an error the previous one stands. An error
	// wrapping ErrSuperseded means another runner saved since this one
	// loaded: this runner is no longer the job's, and stops.
	Save(ctx context.Context, b []byte) error
	// Where names it, for messages.
	Where() string
}

// ErrSuperseded is a CheckpointStore's answer to a runner whose job has
// moved to another runtime.
var ErrSuperseded = errors.New("the job's checkpoint was saved by another runner: the job has moved")

// FileCheckpoints keeps a job's checkpoint in a file, written whole to a
// temporary file, fsynced and renamed.
type FileCheckpoints struct{ Path string }

// Load implements CheckpointStore.
func (f FileCheckpoints) Load(context.Context) ([]byte, error) {
	b, err := os.ReadFile(f.Path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	return b, err
}

// Save implements CheckpointStore.
func (f FileCheckpoints) Save(_ context.Context, b []byte) error {
	if err := os.MkdirAll(filepath.Dir(f.Path), 0o755); err != nil {
		return err
	}
	return fsutil.WriteFile(f.Path, b)
}

// Where implements CheckpointStore.
func (f FileCheckpoints) Where() string { return f.Path }

// checkpoint writes the current state. The caller has delivered every
// result of the records up to the offsets it records.
func (r *Runner) checkpoint(ctx context.Context) error {
	start := time.Now()
	st, dict, err := r.pipe.snapshot()
	if err != nil {
		return err
	}
	cp := checkpointFile{Version: checkpointVersion, Job: r.spec.Name, Topic: r.spec.Source.Topic, Taken: start,
		Operator: st, Dictionary: dict}
	for k, ps := range r.pipe.parts {
		pos := position{Topic: k.topic, Partition: k.partition, Offset: -1}
		if o, ok := r.offsets[k]; ok {
			pos.Offset = o
		}
		pos.EventTime, pos.HasEventTime = ps.wm.Max()
		if pos.Offset >= 0 || pos.HasEventTime {
			cp.Sources = append(cp.Sources, pos)
		}
	}
	ends, err := r.sinkOffsets(ctx)
	if err != nil {
		return err
	}
	for k, o := range ends {
		cp.SinkEnds = append(cp.SinkEnds, position{Topic: k.topic, Partition: k.partition, Offset: o})
	}
	// What a restart found written, and the replay has not made again
	// yet, is still ahead of the job (the replay may span checkpoints):
	// keep skipping it, now and after a restart from this checkpoint.
	pending := map[string]int{}
	for id, n := range r.written {
		if n > 0 {
			pending[id] = n
		}
	}
	if len(pending) > 0 {
		cp.Written = pending
	}
	b, err := json.Marshal(cp)
	if err != nil {
		return err
	}
	if err := r.store.Save(ctx, b); err != nil {
		return err
	}
	r.written = pending
	r.count(func(c *Counts) {
		c.Checkpoints++
		c.CheckpointBytes = int64(len(b))
		c.CheckpointDuration = time.Since(start)
	})
	r.mu.Lock()
	r.lastCheckpoint = start
	r.mu.Unlock()
	return nil
}

// restore loads the last checkpoint, if there is one.
func (r *Runner) restore(ctx context.Context) error {
	b, err := r.store.Load(ctx)
	if err != nil {
		return fmt.Errorf("checkpoint %s: %w", r.store.Where(), err)
	}
	if b == nil {
		return nil
	}
	var cp checkpointFile
	if err := json.Unmarshal(b, &cp); err != nil {
		return fmt.Errorf("checkpoint %s: %w", r.store.Where(), err)
	}
	if (cp.Version != 1 && cp.Version != checkpointVersion) || cp.Job != r.spec.Name || cp.Topic != r.spec.Source.Topic {
		return fmt.Errorf("checkpoint %s: version %d of job %q on topic %q does not fit job %q on topic %q; move it away to start over",
			r.store.Where(), cp.Version, cp.Job, cp.Topic, r.spec.Name, r.spec.Source.Topic)
	}
	if err := r.pipe.restore(cp.Operator, cp.Dictionary); err != nil {
		return fmt.Errorf("checkpoint %s: %w", r.store.Where(), err)
	}
	for p, o := range cp.Offsets {
		cp.Sources = append(cp.Sources, position{Topic: cp.Topic, Partition: p, Offset: o})
	}
	for p, ts := range cp.EventTimes {
		cp.Sources = append(cp.Sources, position{Topic: cp.Topic, Partition: p, Offset: -1, EventTime: ts, HasEventTime: true})
	}
	for _, pos := range cp.Sources {
		k := srcPart{pos.Topic, pos.Partition}
		r.pipe.AddPartition(k.topic, k.partition)
		if pos.Offset >= 0 {
			r.offsets[k] = pos.Offset
		}
		if pos.HasEventTime {
			r.pipe.parts[k].wm.Observe(pos.EventTime)
		}
	}
	if cp.Version >= 2 {
		r.sinkEnds = map[srcPart]int64{}
		r.written = cp.Written
		for _, pos := range cp.SinkEnds {
			r.sinkEnds[srcPart{pos.Topic, pos.Partition}] = pos.Offset
		}
	}
	r.count(func(c *Counts) { c.Restored = true })
	r.opts.Logger.Info("stream: resumed from checkpoint", "job", r.spec.Name, "taken", cp.Taken, "panes", len(cp.Operator.Panes), "sources", len(cp.Sources))
	return nil
}
