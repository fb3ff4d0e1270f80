package job

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"mecha/internal/atomicfile"
	"mecha/stream/window"
)

// checkpointFile is a job's last checkpoint: where each source partition
// resumes, each partition's newest event time (its watermark), the window
// state and, for count-distinct, the value dictionary. It is written whole
// to a temporary file, fsynced and renamed, so a crash leaves the previous
// checkpoint or this one.
type checkpointFile struct {
	Version    int             `json:"version"`
	Job        string          `json:"job"`
	Topic      string          `json:"topic"`
	Taken      time.Time       `json:"taken"`
	Offsets    map[int32]int64 `json:"offsets"`
	EventTimes map[int32]int64 `json:"eventTimes"`
	Operator   window.State    `json:"operator"`
	Dictionary []string        `json:"dictionary,omitempty"`
}

const checkpointVersion = 1

func (r *Runner) checkpointPath() string { return filepath.Join(r.dir, "checkpoint.json") }

// checkpoint writes the current state. The caller has delivered every
// result of the records up to the offsets it records.
func (r *Runner) checkpoint() error {
	start := time.Now()
	st, err := r.op.Snapshot(r.agg.Encode)
	if err != nil {
		return err
	}
	cp := checkpointFile{Version: checkpointVersion, Job: r.spec.Name, Topic: r.spec.Source.Topic, Taken: start,
		Offsets: map[int32]int64{}, EventTimes: map[int32]int64{}, Operator: st, Dictionary: r.agg.DictionaryValues()}
	for p, o := range r.offsets {
		cp.Offsets[p] = o
	}
	for p, w := range r.wms {
		if max, ok := w.Max(); ok {
			cp.EventTimes[p] = max
		}
	}
	b, err := json.Marshal(cp)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(r.dir, 0o755); err != nil {
		return err
	}
	if err := atomicfile.Write(r.checkpointPath(), b); err != nil {
		return err
	}
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
func (r *Runner) restore() error {
	b, err := os.ReadFile(r.checkpointPath())
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var cp checkpointFile
	if err := json.Unmarshal(b, &cp); err != nil {
		return fmt.Errorf("checkpoint %s: %w", r.checkpointPath(), err)
	}
	if cp.Version != checkpointVersion || cp.Job != r.spec.Name || cp.Topic != r.spec.Source.Topic {
		return fmt.Errorf("checkpoint %s: version %d of job %q on topic %q does not fit job %q on topic %q; move it away to start over",
			r.checkpointPath(), cp.Version, cp.Job, cp.Topic, r.spec.Name, r.spec.Source.Topic)
	}
	if err := r.agg.RestoreDictionary(cp.Dictionary); err != nil {
		return fmt.Errorf("checkpoint %s: %w", r.checkpointPath(), err)
	}
	if err := r.op.Restore(cp.Operator, r.agg.Decode); err != nil {
		return fmt.Errorf("checkpoint %s: %w", r.checkpointPath(), err)
	}
	for p, o := range cp.Offsets {
		r.offsets[p] = o
	}
	for p, ts := range cp.EventTimes {
		w := &window.Watermark{Delay: r.spec.Source.MaxOutOfOrderness.Milliseconds()}
		w.Observe(ts)
		r.wms[p] = w
	}
	r.count(func(c *Counts) { c.Restored = true })
	r.opts.Logger.Info("stream: resumed from checkpoint", "job", r.spec.Name, "taken", cp.Taken, "panes", len(cp.Operator.Panes), "offsets", cp.Offsets)
	return nil
}
