package runtime

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/dapr/components-contrib/state"

	"mecha/components"
	"mecha/runtime/appchannel"
	"mecha/runtime/blocks"
	"mecha/stream/job"
)

// jobSet runs the StreamJob documents of the resources path and follows
// their hot reload: a new job starts, a removed one stops (taking its
// last checkpoint on the way out), a changed one stops and starts again
// from its checkpoint.
type jobSet struct {
	r       *Runtime
	ctx     context.Context // ends at shutdown
	workers *sync.WaitGroup // owns the jobs' goroutines

	// mu guards running; sync runs on the startup goroutine, then on
	// the hot reload watcher's.
	mu      sync.Mutex
	running map[string]*runningJob
}

// runningJob is one started job.
type runningJob struct {
	spec   string // the spec as JSON, to tell a changed one
	cancel context.CancelFunc
	done   chan struct{}
}

// sync brings the running jobs to specs.
func (s *jobSet) sync(specs []job.Spec) {
	s.mu.Lock()
	defer s.mu.Unlock()
	want := map[string]job.Spec{}
	for _, sp := range specs {
		want[sp.Name] = sp
	}
	for name, rj := range s.running {
		sp, ok := want[name]
		if ok && specJSON(sp) == rj.spec {
			delete(want, name) // unchanged
			continue
		}
		rj.cancel()
		<-rj.done
		s.r.jobs.Remove(name)
		delete(s.running, name)
		if ok {
			s.r.log.Info("stream job changed; restarting it from its checkpoint", "job", name)
		} else {
			s.r.log.Info("stream job removed; stopped", "job", name)
		}
	}
	for _, sp := range specs {
		if _, ok := want[sp.Name]; ok {
			s.start(sp)
		}
	}
}

// start starts one job; the caller holds mu.
func (s *jobSet) start(spec job.Spec) {
	r := s.r
	h := r.host(spec.Sink.App)
	run, err := job.New(spec, job.Options{Brokers: r.brokerAddr(), Broker: r.localBroker(), DataDir: filepath.Join(r.cfg.DataDir, "stream"),
		Stdout: os.Stdout, Logger: r.log.With("job", spec.Name), SaveState: h.saveJobState,
		InvokeApp: h.postJobResult, Publish: h.publishJobResult})
	if err != nil {
		r.log.Error("stream job not started", "job", spec.Name, "err", err)
		return
	}
	ctx, cancel := context.WithCancel(s.ctx)
	rj := &runningJob{spec: specJSON(spec), cancel: cancel, done: make(chan struct{})}
	s.running[spec.Name] = rj
	r.jobs.Add(run)
	s.workers.Add(1)
	go func() {
		defer s.workers.Done()
		defer close(rj.done)
		if err := run.Run(ctx); err != nil && ctx.Err() == nil {
			r.log.Error("stream job stopped", "job", spec.Name, "err", err)
		}
	}()
}

func specJSON(s job.Spec) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// streamJobs reads the StreamJob documents of the resources path. A bad
// job stops startup with an error naming the file and field, as a bad
// component does. Jobs are read at startup; a changed job file takes a
// restart.
func (r *Runtime) streamJobs(docs []components.Document) ([]job.Spec, error) {
	var out []job.Spec
	for _, d := range docs {
		if d.Kind != job.Kind {
			continue
		}
		spec, err := job.ParseDocument(d.Raw)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", d.Where(), err)
		}
		if spec.Sink.App != "" && r.host(spec.Sink.App).spec.ID != spec.Sink.App {
			return nil, fmt.Errorf("%s: stream job %q: spec.sink.app: %q is not an app of this runtime (--app-id or --app)", d.Where(), spec.Name, spec.Sink.App)
		}
		if spec.Source.Brokers == "" && r.broker == nil {
			return nil, fmt.Errorf("%s: stream job %q: spec.source.brokers: not set, and the embedded broker is off (--broker=false)", d.Where(), spec.Name)
		}
		r.log.Info("stream job loaded", "job", spec.Name, "source", spec.Source.Topic, "sink", spec.Sink.Type)
		out = append(out, spec)
	}
	return out, nil
}

// saveJobState is a stream job's state sink: results saved through the
// state building block, under keys the app reads as its own.
func (h *appHost) saveJobState(ctx context.Context, store string, entries []job.StateEntry) error {
	items := make([]state.SetRequest, len(entries))
	for i, e := range entries {
		items[i] = state.SetRequest{Key: e.Key, Value: e.Value}
	}
	return h.blocks.SaveState(ctx, store, items)
}

// postJobResult is a stream job's app sink: a POST of one result to a
// route of the app. It fails (and the job retries) until the app is up,
// and when the app answers with an error status.
func (h *appHost) postJobResult(ctx context.Context, route string, body []byte) error {
	ch := h.local.Channel()
	if ch == nil {
		return fmt.Errorf("app sink %s: the app is not connected yet", route)
	}
	resp, err := ch.Invoke(ctx, &appchannel.InvokeRequest{Method: strings.TrimPrefix(route, "/"), Verb: "POST",
		ContentType: "application/json", Body: body})
	if err != nil {
		return fmt.Errorf("app sink %s: %w", route, err)
	}
	if resp.Status >= 300 {
		return fmt.Errorf("app sink %s: the app answered %d: %.200s", route, resp.Status, resp.Body)
	}
	return nil
}

// publishJobResult is a stream job's pubsub sink: one result published
// as a CloudEvent, as the app's own publishes are.
func (h *appHost) publishJobResult(ctx context.Context, pubsub, topic string, body []byte) error {
	return h.blocks.Publish(ctx, &blocks.PublishRequest{PubsubName: pubsub, Topic: topic, Data: body, ContentType: "application/json"})
}
