package job

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"
)

// control is what operators change on a running job. Its own mutex guards
// it; the run loop reads a copy once per poll.
type control struct {
	mu          sync.Mutex
	paused      bool
	rateLimit   float64 // records per second at the source; 0 = none
	sampling    float64 // share of records kept, (0, 1]
	checkpoints bool
	trigger     bool
}

func (c *control) snapshot() control {
	c.mu.Lock()
	defer c.mu.Unlock()
	return control{paused: c.paused, rateLimit: c.rateLimit, sampling: c.sampling, checkpoints: c.checkpoints, trigger: c.trigger}
}

// Pause stops reading the source; windows and checkpoints stay.
func (r *Runner) Pause() { r.ctl.mu.Lock(); r.ctl.paused = true; r.ctl.mu.Unlock() }

// Resume reads the source again.
func (r *Runner) Resume() { r.ctl.mu.Lock(); r.ctl.paused = false; r.ctl.mu.Unlock() }

// SetRateLimit bounds the records per second read from the source; 0
// removes the bound.
func (r *Runner) SetRateLimit(perSecond float64) error {
	if perSecond < 0 {
		return fmt.Errorf("rate limit %v must not be negative", perSecond)
	}
	r.ctl.mu.Lock()
	r.ctl.rateLimit = perSecond
	r.ctl.mu.Unlock()
	return nil
}

// SetSampling keeps that share of the source's records, chosen by offset
// so that a replay after a restart keeps the same ones.
func (r *Runner) SetSampling(share float64) error {
	if share <= 0 || share > 1 {
		return fmt.Errorf("sampling %v must be in (0, 1]", share)
	}
	r.ctl.mu.Lock()
	r.ctl.sampling = share
	r.ctl.mu.Unlock()
	return nil
}

// SetCheckpointing turns periodic checkpoints on or off.
func (r *Runner) SetCheckpointing(on bool) error {
	if on && r.store == nil {
		return fmt.Errorf("job %q has no data dir for checkpoints", r.spec.Name)
	}
	r.ctl.mu.Lock()
	r.ctl.checkpoints = on
	r.ctl.mu.Unlock()
	return nil
}

// TriggerCheckpoint asks for a checkpoint at the end of the current poll.
func (r *Runner) TriggerCheckpoint() error {
	if r.store == nil {
		return fmt.Errorf("job %q has no data dir for checkpoints", r.spec.Name)
	}
	r.ctl.mu.Lock()
	r.ctl.trigger = true
	r.ctl.mu.Unlock()
	return nil
}

// Status is a job's state and metrics, as the control API lists them.
type Status struct {
	Job    string `json:"job"`
	Source string `json:"source"`
	// Paused is the state asked for (pause or resume): what a pause
	// answers. Reading says whether the source is read in fact: a pause
	// takes effect at the end of the poll under way.
	Paused    bool    `json:"paused"`
	Reading   bool    `json:"reading"`
	RateLimit float64 `json:"rateLimit"`
	// EffectiveRate is the source limit in force: RateLimit, or lower
	// while overload protection holds the job back (0 = none).
	EffectiveRate float64 `json:"effectiveRate"`
	// Overloaded names the threshold the last health check crossed.
	Overloaded   string  `json:"overloaded,omitempty"`
	Sampling     float64 `json:"sampling"`
	Checkpoints  bool    `json:"checkpoints"`
	In           int64   `json:"in"`
	Out          int64   `json:"out"`
	Filtered     int64   `json:"filtered"`
	SampledOut   int64   `json:"sampledOut"`
	Late         int64   `json:"late"`
	DeadLettered int64   `json:"deadLettered"`
	InputRate    float64 `json:"inputRate"`
	OutputRate   float64 `json:"outputRate"`
	// Lag is the records not read yet per source partition, by
	// "topic/partition".
	Lag map[string]int64 `json:"lag"`
	// Parallelism is the number of tasks.
	Parallelism int `json:"parallelism"`
	// Skipped are records a restart found already in its topic sink.
	Skipped int64 `json:"skipped,omitempty"`
	// WatermarkDelayMs is how far the watermark trails the wall clock.
	WatermarkDelayMs  int64     `json:"watermarkDelayMs"`
	CheckpointCount   int64     `json:"checkpointCount"`
	CheckpointBytes   int64     `json:"checkpointBytes"`
	CheckpointMs      float64   `json:"checkpointMs"`
	LastCheckpoint    time.Time `json:"lastCheckpoint,omitzero"`
	ResumedCheckpoint bool      `json:"resumedFromCheckpoint"`
}

// Status returns the job's state and metrics.
func (r *Runner) Status() Status {
	c := r.ctl.snapshot()
	r.mu.Lock()
	defer r.mu.Unlock()
	st := Status{Job: r.spec.Name, Source: r.spec.Source.Topic, Paused: c.paused, Reading: !r.pausedNow, RateLimit: c.rateLimit,
		Sampling: c.sampling, Checkpoints: c.checkpoints,
		In: r.counts.In, Out: r.counts.Out, Filtered: r.counts.Filtered, SampledOut: r.counts.SampledOut,
		Late: r.counts.Late, DeadLettered: r.counts.DeadLettered,
		InputRate: r.inRate, OutputRate: r.outRate, Lag: map[string]int64{}, Parallelism: r.spec.tasks(), Skipped: r.counts.Skipped,
		CheckpointCount: r.counts.Checkpoints, CheckpointBytes: r.counts.CheckpointBytes,
		CheckpointMs: float64(r.counts.CheckpointDuration.Microseconds()) / 1000, LastCheckpoint: r.lastCheckpoint,
		ResumedCheckpoint: r.counts.Restored, EffectiveRate: r.effectiveRate, Overloaded: r.overloaded}
	for p, n := range r.lag {
		st.Lag[fmt.Sprintf("%s/%d", p.topic, p.partition)] = n
	}
	if r.wmNow > -1<<62 {
		st.WatermarkDelayMs = time.Now().UnixMilli() - r.wmNow
	}
	return st
}

// Jobs is the control API over a set of runners, mounted by the runtime
// on its admin (metrics) port under /v1.0-alpha1/stream/:
//
//	GET  /v1.0-alpha1/stream/jobs                    every job's Status
//	GET  /v1.0-alpha1/stream/jobs/{job}              one job's Status
//	POST /v1.0-alpha1/stream/jobs/{job}/pause        stop reading the source
//	POST /v1.0-alpha1/stream/jobs/{job}/resume       read it again
//	POST /v1.0-alpha1/stream/jobs/{job}/checkpoint   take a checkpoint now
//	PUT  /v1.0-alpha1/stream/jobs/{job}/config       {"rateLimit":N,"sampling":F,"checkpoints":B}
type Jobs struct {
	mu      sync.RWMutex // guards runners
	runners map[string]*Runner
}

// Add registers a runner under its job name.
func (j *Jobs) Add(r *Runner) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.runners == nil {
		j.runners = map[string]*Runner{}
	}
	j.runners[r.spec.Name] = r
}

// Remove takes a runner off the API (its job stopped or was replaced).
func (j *Jobs) Remove(name string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	delete(j.runners, name)
}

// ServeHTTP serves the control API.
func (j *Jobs) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	rest := strings.TrimPrefix(req.URL.Path, "/v1.0-alpha1/stream/jobs")
	parts := strings.Split(strings.Trim(rest, "/"), "/")
	if rest == "" || rest == "/" {
		if req.Method != http.MethodGet {
			httpError(w, http.StatusMethodNotAllowed, "use GET to list jobs")
			return
		}
		j.mu.RLock()
		out := make([]Status, 0, len(j.runners))
		for _, r := range j.runners {
			out = append(out, r.Status())
		}
		j.mu.RUnlock()
		sort.Slice(out, func(a, b int) bool { return out[a].Job < out[b].Job })
		writeJSON(w, out)
		return
	}
	j.mu.RLock()
	r := j.runners[parts[0]]
	j.mu.RUnlock()
	if r == nil {
		httpError(w, http.StatusNotFound, fmt.Sprintf("no stream job %q", parts[0]))
		return
	}
	action := ""
	if len(parts) > 1 {
		action = parts[1]
	}
	var err error
	switch {
	case action == "" && req.Method == http.MethodGet:
	case action == "pause" && req.Method == http.MethodPost:
		r.Pause()
	case action == "resume" && req.Method == http.MethodPost:
		r.Resume()
	case action == "checkpoint" && req.Method == http.MethodPost:
		err = r.TriggerCheckpoint()
	case action == "config" && req.Method == http.MethodPut:
		var c struct {
			RateLimit   *float64 `json:"rateLimit"`
			Sampling    *float64 `json:"sampling"`
			Checkpoints *bool    `json:"checkpoints"`
		}
		dec := json.NewDecoder(req.Body)
		dec.DisallowUnknownFields()
		if err := dec.Decode(&c); err != nil {
			httpError(w, http.StatusBadRequest, "config body: "+err.Error())
			return
		}
		if c.RateLimit != nil {
			err = r.SetRateLimit(*c.RateLimit)
		}
		if err == nil && c.Sampling != nil {
			err = r.SetSampling(*c.Sampling)
		}
		if err == nil && c.Checkpoints != nil {
			err = r.SetCheckpointing(*c.Checkpoints)
		}
	default:
		httpError(w, http.StatusNotFound, fmt.Sprintf("no %s %s on a stream job (pause, resume, checkpoint: POST; config: PUT)", req.Method, action))
		return
	}
	if err != nil {
		httpError(w, http.StatusBadRequest, err.Error())
		return
	}
	writeJSON(w, r.Status())
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func httpError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}
