// Package job is a stream job: its declaration (a StreamJob document, or
// a Spec built in Go) and the pipeline that runs it over a Kafka-compatible
// cluster: source topic → JSON decode → filter → map → key-by → event-time
// window with an aggregate (or a windowed join with a second topic, or no
// window at all: each record passes through) → sink. Records that fail to
// decode or to evaluate go to the job's dead-letter topic with the error
// attached, and late events to its late topic; neither stops the job.
//
// A job runs as Parallelism tasks: the source partitions are spread over
// them, and after key-by each record moves to the task that owns its key
// (by key hash), which holds that key's window state.
package job

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"mecha/stream/agg"
	"mecha/stream/window"
)

// APIVersion and Kind identify a StreamJob document.
const (
	APIVersion = "mecha.io/v1alpha1"
	Kind       = "StreamJob"
)

// ErrSpec is wrapped by every invalid job.
var ErrSpec = errors.New("invalid stream job")

// Duration is a time.Duration written as "10s" in YAML and JSON.
type Duration struct{ time.Duration }

// UnmarshalJSON reads "10s", "500ms" or a number of milliseconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		var ms int64
		if err2 := json.Unmarshal(b, &ms); err2 != nil {
			return fmt.Errorf("want a duration such as \"10s\", got %s", b)
		}
		d.Duration = time.Duration(ms) * time.Millisecond
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("want a duration such as \"10s\", got %q", s)
	}
	d.Duration = v
	return nil
}

// Document is a StreamJob as written in a resources folder.
type Document struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Spec Spec `json:"spec"`
}

// Spec is what a job does.
type Spec struct {
	// Name identifies the job (the consumer group is "stream-<name>").
	Name   string `json:"-"`
	Source Source `json:"source"`
	// Filter is an expr expression over the record's fields that keeps
	// the record when true.
	Filter string `json:"filter,omitempty"`
	// Map builds the output fields, each from an expr expression over
	// the record's fields; empty keeps the record as it is.
	Map map[string]string `json:"map,omitempty"`
	// KeyBy is an expr expression whose value (as a string) keys the
	// window; empty puts every record under one key.
	KeyBy string `json:"keyBy,omitempty"`
	// Window is the event-time window; without one (no type) each record
	// that passes the filter goes to the sink as its mapped fields.
	Window Window `json:"window,omitempty"`
	// Aggregate is what a window computes; a join has none.
	Aggregate Aggregate `json:"aggregate,omitempty"`
	// Join pairs the records of a second topic with this source's: a
	// left and a right record with the same key in the same window make
	// one result, {"left": …, "right": …}, when the window fires.
	Join *Join `json:"join,omitempty"`
	// Parallelism is the number of tasks (default 1).
	Parallelism     int    `json:"parallelism,omitempty"`
	Sink            Sink   `json:"sink"`
	DeadLetterTopic string `json:"deadLetterTopic,omitempty"`
	LateTopic       string `json:"lateTopic,omitempty"`
	// Checkpoint is how often the job snapshots its source offsets and
	// window state to the data dir (default every 10 s); a restarted job
	// resumes from its last checkpoint.
	Checkpoint Checkpoint `json:"checkpoint,omitempty"`
	Overload   Overload   `json:"overload,omitempty"`
}

// Join is the right-hand side of a windowed stream–stream join, read from
// the same cluster as the source.
type Join struct {
	Topic string `json:"topic"`
	// Filter keeps a right-hand record when true.
	Filter string `json:"filter,omitempty"`
	// KeyBy keys a right-hand record; it must match the left's keyBy.
	KeyBy string `json:"keyBy"`
	// EventTimeField defaults to the source's.
	EventTimeField string `json:"eventTimeField,omitempty"`
}

// MaxParallelism bounds Parallelism.
const MaxParallelism = 256

// Checkpoint configures checkpoints.
type Checkpoint struct {
	Interval Duration `json:"interval,omitempty"`
	Disabled bool     `json:"disabled,omitempty"`
}

// Source is a topic of the cluster.
type Source struct {
	Topic string `json:"topic"`
	// Brokers defaults to the embedded broker.
	Brokers string `json:"brokers,omitempty"`
	// StartOffset is earliest (default) or latest, for a new job.
	StartOffset string `json:"startOffset,omitempty"`
	// EventTimeField names the field holding the event time in
	// milliseconds since the epoch; empty takes the record timestamp.
	EventTimeField string `json:"eventTimeField,omitempty"`
	// MaxOutOfOrderness bounds how late an event may arrive and still be
	// on time: the watermark trails the newest event time by this much.
	MaxOutOfOrderness Duration `json:"maxOutOfOrderness,omitempty"`
	// IdleTimeout marks a partition idle after this long without a record
	// (wall time; default 5s): an idle partition stops holding the
	// watermark back, so windows still fire when some partitions get no
	// data. It holds the watermark again when a record arrives.
	IdleTimeout Duration `json:"idleTimeout,omitempty"`
	// RateLimit is a static bound on records per second read from the
	// source (0 = none); the control API and overload protection change
	// the rate under it.
	RateLimit float64 `json:"rateLimit,omitempty"`
}

// Overload sets the health thresholds past which the job halves its
// source rate, raising it 10% per healthy interval afterwards. No
// threshold set, no overload protection.
type Overload struct {
	MaxBacklog int64    `json:"maxBacklog,omitempty"`
	MaxLag     Duration `json:"maxLag,omitempty"`
	MaxCPU     float64  `json:"maxCPU,omitempty"`
	MaxGCPause Duration `json:"maxGCPause,omitempty"`
	// Interval is how often health is checked; default 1s.
	Interval Duration `json:"interval,omitempty"`
}

// Window is the event-time window.
type Window struct {
	Type            string   `json:"type"`
	Size            Duration `json:"size,omitempty"`
	Slide           Duration `json:"slide,omitempty"`
	Gap             Duration `json:"gap,omitempty"`
	AllowedLateness Duration `json:"allowedLateness,omitempty"`
}

// Aggregate is what the window computes over Field (an expr expression).
type Aggregate struct {
	Type  string `json:"type"`
	Field string `json:"field,omitempty"`
	N     int    `json:"n,omitempty"`
}

// Sink is where results go:
//   - topic: a topic of the source's cluster, keyed by the result's key;
//     each record carries headers mecha-job and mecha-id, by which a
//     restarted job skips what it had written after its checkpoint;
//   - state: a state store of the runtime, key "<job>:<key>:<window
//     start>" (without a window, "<job>:<key>"), so a replayed or re-fired
//     window overwrites its own entry;
//   - app: an HTTP POST of each result to Route on the app;
//   - pubsub: a publish of each result to Topic on the runtime's pub/sub
//     component PubSub;
//   - stdout: one JSON object a line;
//   - blackhole: counted and dropped (benchmarks).
type Sink struct {
	Type  string `json:"type"`
	Topic string `json:"topic,omitempty"`
	// Store is the state store of a state sink; default "statestore".
	Store string `json:"store,omitempty"`
	// Route is the app's path for an app sink, such as /results.
	Route string `json:"route,omitempty"`
	// PubSub is the pub/sub component of a pubsub sink; default "pubsub".
	PubSub string `json:"pubsub,omitempty"`
	// App is the app (of the runtime's --app-id and --app apps) whose
	// state keys, route and CloudEvent source a state, app or pubsub
	// sink uses; default the --app-id app.
	App string `json:"app,omitempty"`
}

// ParseDocument decodes a StreamJob from JSON (the components loader
// turns YAML into JSON), rejecting unknown fields, and validates it.
func ParseDocument(raw []byte) (Spec, error) {
	var d Document
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&d); err != nil {
		return Spec{}, fmt.Errorf("%w: %v", ErrSpec, strings.TrimPrefix(err.Error(), "json: "))
	}
	if d.APIVersion != APIVersion || d.Kind != Kind {
		return Spec{}, fmt.Errorf("%w: want apiVersion %s and kind %s, got %s %s", ErrSpec, APIVersion, Kind, d.APIVersion, d.Kind)
	}
	d.Spec.Name = d.Metadata.Name
	if err := d.Spec.Validate(); err != nil {
		return Spec{}, err
	}
	return d.Spec, nil
}

// tasks is the number of tasks the job runs as.
func (s Spec) tasks() int { return max(1, s.Parallelism) }

// windowSpec converts the window to the operator's, in milliseconds.
func (s Spec) windowSpec() window.Spec {
	return window.Spec{Kind: window.Kind(s.Window.Type), Size: s.Window.Size.Milliseconds(),
		Slide: s.Window.Slide.Milliseconds(), Gap: s.Window.Gap.Milliseconds(),
		AllowedLateness: s.Window.AllowedLateness.Milliseconds()}
}

// Validate names the first bad field, as spec.<path>.
func (s Spec) Validate() error {
	bad := func(field, format string, args ...any) error {
		return fmt.Errorf("%w %q: spec.%s: %s", ErrSpec, s.Name, field, fmt.Sprintf(format, args...))
	}
	if s.Name == "" {
		return fmt.Errorf("%w: metadata.name: must be set", ErrSpec)
	}
	if s.Source.Topic == "" {
		return bad("source.topic", "must be set")
	}
	switch s.Source.StartOffset {
	case "", "earliest", "latest":
	default:
		return bad("source.startOffset", "want earliest or latest, got %q", s.Source.StartOffset)
	}
	if s.Source.MaxOutOfOrderness.Duration < 0 {
		return bad("source.maxOutOfOrderness", "must not be negative")
	}
	if s.Source.IdleTimeout.Duration < 0 {
		return bad("source.idleTimeout", "must not be negative")
	}
	if s.Source.RateLimit < 0 {
		return bad("source.rateLimit", "must not be negative")
	}
	if o := s.Overload; o.MaxBacklog < 0 || o.MaxLag.Duration < 0 || o.MaxCPU < 0 || o.MaxGCPause.Duration < 0 || o.Interval.Duration < 0 {
		return bad("overload", "thresholds and interval must not be negative")
	}
	if s.Checkpoint.Interval.Duration < 0 {
		return bad("checkpoint.interval", "must not be negative")
	}
	if s.Parallelism < 0 || s.Parallelism > MaxParallelism {
		return bad("parallelism", "want 1 to %d, got %d", MaxParallelism, s.Parallelism)
	}
	switch {
	case s.Window.Type == "":
		if s.Aggregate.Type != "" {
			return bad("window", "an aggregate needs a window")
		}
		if s.Join != nil {
			return bad("window", "a join needs a window")
		}
	default:
		if err := s.windowSpec().Validate(); err != nil {
			return bad("window", "%s", strings.TrimPrefix(err.Error(), window.ErrSpec.Error()+": "))
		}
		if s.Join != nil {
			if s.Aggregate.Type != "" {
				return bad("aggregate", "a join has no aggregate: each matching pair is a result")
			}
			break
		}
		if _, err := agg.NewFactory(agg.Spec{Kind: agg.Kind(s.Aggregate.Type), N: s.Aggregate.N}); err != nil {
			return bad("aggregate", "%v", err)
		}
		if s.Aggregate.Type != string(agg.Count) && s.Aggregate.Field == "" {
			return bad("aggregate.field", "must be set for %s", s.Aggregate.Type)
		}
	}
	if j := s.Join; j != nil {
		if j.Topic == "" {
			return bad("join.topic", "must be set")
		}
		if j.Topic == s.Source.Topic {
			return bad("join.topic", "is the source topic %q; join two different topics", j.Topic)
		}
		if j.KeyBy == "" || s.KeyBy == "" {
			return bad("join.keyBy", "a join needs keyBy on both sides")
		}
	}
	if _, err := compile(s); err != nil {
		return err
	}
	switch s.Sink.Type {
	case "topic":
		if s.Sink.Topic == "" {
			return bad("sink.topic", "must be set for a topic sink")
		}
	case "pubsub":
		if s.Sink.Topic == "" {
			return bad("sink.topic", "must be set for a pubsub sink")
		}
	case "app":
		if !strings.HasPrefix(s.Sink.Route, "/") {
			return bad("sink.route", "want the app's path, such as /results, got %q", s.Sink.Route)
		}
	case "stdout", "state", "blackhole":
	default:
		return bad("sink.type", "want topic, state, app, pubsub, stdout or blackhole, got %q", s.Sink.Type)
	}
	return nil
}
