package runtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/dapr/components-contrib/state"

	"mecha/components"
	"mecha/internal/clustermap"
	"mecha/runtime/appchannel"
	"mecha/runtime/blocks"
	"mecha/stream/job"
)

// jobSet runs the StreamJob documents of the resources path and follows
// their hot reload: a new job starts, a removed one stops (taking its
// last checkpoint on the way out), a changed one stops and starts again
// from its checkpoint.
//
// In the broker cluster a job runs on one runtime of the DC: the one that
// leads the Crux slot of its checkpoint key (jobKey), which the control
// plane places and fails over. Its checkpoints are kept in the Crux
// cluster under that key, so the runtime that takes the slot over after a
// death resumes the job from them. Every server runtime carries the same
// StreamJob documents; place starts and stops jobs as the map changes.
type jobSet struct {
	r       *Runtime
	ctx     context.Context // ends at shutdown
	workers *sync.WaitGroup // owns the jobs' goroutines

	// mu guards specs and running; sync runs on the startup goroutine,
	// then on the hot reload watcher's, and place on the map follower's.
	mu      sync.Mutex
	specs   []job.Spec
	running map[string]*runningJob
}

// placed reports whether jobs are placed by the control plane: in the
// broker cluster.
func (s *jobSet) placed() bool { return s.r.cfg.BrokerCluster && s.r.cruxMaps != nil }

// jobKey is the Crux key of a job's checkpoint in the broker cluster; its
// hash tag, the job's name, picks the slot whose leader runs the job.
func jobKey(name string) string { return "mecha-stream-checkpoint-{" + name + "}" }

// owns reports whether this runtime should run job name now.
func (s *jobSet) owns(name string) bool {
	if !s.placed() {
		return true
	}
	g := s.r.cruxMaps.Map().Slot(clustermap.Slot(jobKey(name)))
	return g != nil && g.Leader != "" && g.Leader == s.r.cfg.Membership.NodeName
}

// followPlacement starts and stops the jobs as the cluster map moves
// their slots' leaderships.
func (s *jobSet) followPlacement() {
	for {
		m := s.r.cruxMaps.Map()
		s.mu.Lock()
		s.place()
		s.mu.Unlock()
		if s.r.cruxMaps.WaitNewer(s.ctx, m.Version) != nil {
			return
		}
	}
}

// place starts the jobs this runtime owns and stops the others; the
// caller holds mu.
func (s *jobSet) place() {
	for _, sp := range s.specs {
		rj, running := s.running[sp.Name]
		switch own := s.owns(sp.Name); {
		case own && !running:
			if s.placed() {
				s.r.log.Info("stream job placed on this runtime", "job", sp.Name, "slot", clustermap.Slot(jobKey(sp.Name)))
			}
			s.start(sp)
		case !own && running:
			s.r.log.Info("stream job placed on another runtime; stopping it here", "job", sp.Name)
			s.stop(sp.Name, rj)
		case own && running && s.placed() && rj.exited():
			// It stopped (superseded while this runtime was cut off)
			// and the slot is back: run it again from the checkpoint.
			s.stop(sp.Name, rj)
			s.start(sp)
		}
	}
}

// stop stops a running job; the caller holds mu.
func (s *jobSet) stop(name string, rj *runningJob) {
	rj.cancel()
	<-rj.done
	s.r.jobs.Remove(name)
	delete(s.running, name)
}

// runningJob is one started job.
type runningJob struct {
	spec   string // the spec as JSON, to tell a changed one
	cancel context.CancelFunc
	done   chan struct{}
}

// exited reports whether the job's Run has returned.
func (rj *runningJob) exited() bool {
	select {
	case <-rj.done:
		return true
	default:
		return false
	}
}

// sync brings the running jobs to specs.
func (s *jobSet) sync(specs []job.Spec) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.specs = specs
	want := map[string]job.Spec{}
	for _, sp := range specs {
		want[sp.Name] = sp
	}
	for name, rj := range s.running {
		sp, ok := want[name]
		if ok && specJSON(sp) == rj.spec {
			continue // unchanged
		}
		s.stop(name, rj)
		if ok {
			s.r.log.Info("stream job changed; restarting it from its checkpoint", "job", name)
		} else {
			s.r.log.Info("stream job removed; stopped", "job", name)
		}
	}
	s.place()
}

// start starts one job; the caller holds mu.
func (s *jobSet) start(spec job.Spec) {
	r := s.r
	h := r.host(spec.Sink.App)
	opts := job.Options{Brokers: r.brokerAddr(), Broker: r.localBroker(), SASL: r.brokerSASL, DataDir: filepath.Join(r.cfg.DataDir, "stream"),
		Stdout: os.Stdout, Logger: r.log.With("job", spec.Name), SaveState: h.saveJobState,
		InvokeApp: h.postJobResult, Publish: h.publishJobResult}
	if s.placed() {
		opts.Checkpoints = &cruxCheckpoints{blocks: h.blocks, key: jobKey(spec.Name)}
	}
	run, err := job.New(spec, opts)
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

// cruxCheckpoints keeps a job's checkpoints in the Crux cluster under its
// jobKey, written with strong consistency (every in-sync replica has it
// before the job goes on) and guarded by the ETag read or written last: a
// save fails with job.ErrSuperseded once another runtime has saved the
// job's checkpoint, so a runtime that lost the job (cut off while the
// slot failed over) does not overwrite the new runner's progress.
type cruxCheckpoints struct {
	blocks *blocks.Blocks
	key    string
	etag   *string
}

// checkpointStore is the state store the checkpoints go to: the embedded
// default (Crux).
const checkpointStore = "statestore"

func (c *cruxCheckpoints) get(ctx context.Context) (*state.GetResponse, error) {
	st, release, err := c.blocks.OwnState(checkpointStore)
	if err != nil {
		return nil, err
	}
	defer release()
	return st.Get(ctx, &state.GetRequest{Key: c.key, Options: state.GetStateOption{Consistency: state.Strong}})
}

// Load implements job.CheckpointStore.
func (c *cruxCheckpoints) Load(ctx context.Context) ([]byte, error) {
	resp, err := c.get(ctx)
	if err != nil {
		return nil, err
	}
	if resp == nil || len(resp.Data) == 0 {
		return nil, nil
	}
	c.etag = resp.ETag
	return resp.Data, nil
}

// Save implements job.CheckpointStore.
func (c *cruxCheckpoints) Save(ctx context.Context, b []byte) error {
	st, release, err := c.blocks.OwnState(checkpointStore)
	if err != nil {
		return err
	}
	req := &state.SetRequest{Key: c.key, Value: b, ETag: c.etag,
		Options: state.SetStateOption{Consistency: state.Strong, Concurrency: state.FirstWrite}}
	err = st.Set(ctx, req)
	release()
	var ee *state.ETagError
	if errors.As(err, &ee) && ee.Kind() == state.ETagMismatch {
		return fmt.Errorf("%s: %w", c.key, job.ErrSuperseded)
	}
	if err != nil {
		return err
	}
	// The next save is guarded by this one's ETag.
	resp, err := c.get(ctx)
	if err != nil {
		return fmt.Errorf("reading back the checkpoint's etag: %w", err)
	}
	c.etag = resp.ETag
	return nil
}

// Where implements job.CheckpointStore.
func (c *cruxCheckpoints) Where() string { return "crux key " + c.key }
