// Package inputbindings reads the loaded input bindings and delivers their
// events to the app: an OPTIONS probe (or ListInputBindings) first, then a
// POST per event. The app's reply may save state and call output bindings,
// as in Dapr.
package inputbindings

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/dapr/components-contrib/bindings"
	"github.com/dapr/components-contrib/state"
	runtimev1pb "github.com/dapr/dapr/pkg/proto/runtime/v1"

	"mecha/components"
	"mecha/runtime/appchannel"
	"mecha/runtime/blocks"
	"mecha/runtime/inflight"
	"mecha/runtime/metrics"
	"mecha/runtime/resiliency"
)

// Options configure a Runner.
type Options struct {
	Components components.Source
	Blocks     *blocks.Blocks
	Metrics    *metrics.Metrics
	Logger     *slog.Logger
	// Resiliency holds the components' inbound policies: a binding's
	// policy decides how the delivery of its events to the app is
	// retried and timed out. Without one an event is delivered once and
	// a failure goes back to the binding.
	Resiliency *resiliency.Store
}

// Runner keeps one reader per subscribed input binding.
type Runner struct {
	opts     Options
	log      *slog.Logger
	inflight inflight.Tracker

	// mu guards the fields below.
	deliverCtx    context.Context
	deliverCancel context.CancelFunc

	mu       sync.Mutex
	channel  appchannel.Channel
	active   map[string]*reader
	draining bool
}

// deliverCtx is what deliveries run under (see subscriptions.Manager):
// stopping a reader must not abort an event under way.
type reader struct {
	binding bindings.InputBinding
	cancel  context.CancelFunc
}

// New returns an idle runner.
func New(opts Options) *Runner {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	r := &Runner{opts: opts, log: opts.Logger, active: map[string]*reader{}}
	r.deliverCtx, r.deliverCancel = context.WithCancel(context.Background())
	return r
}

// SetChannel sets the app channel events go to.
func (r *Runner) SetChannel(c appchannel.Channel) {
	r.mu.Lock()
	r.channel = c
	r.mu.Unlock()
}

// Sync starts readers for new input bindings the app subscribes to and
// stops those whose component went away or changed.
func (r *Runner) Sync(ctx context.Context) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.draining || r.channel == nil {
		return
	}
	snap := r.opts.Components.Snapshot()
	for name, rd := range r.active {
		if b, ok := snap.InputBindings[name]; !ok || b != rd.binding {
			rd.cancel()
			delete(r.active, name)
		}
	}
	for name, b := range snap.InputBindings {
		if _, ok := r.active[name]; ok {
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		ok, err := r.channel.BindingSubscribed(pctx, name)
		cancel()
		if err != nil {
			r.log.Warn("input binding probe failed; not reading it", "binding", name, "err", err)
			continue
		}
		if !ok {
			r.log.Info("app does not subscribe to input binding", "binding", name)
			continue
		}
		rctx, cancel := context.WithCancel(ctx)
		ch := r.channel
		if err := b.Read(rctx, func(_ context.Context, resp *bindings.ReadResponse) ([]byte, error) {
			return r.deliver(r.deliverCtx, ch, name, resp)
		}); err != nil {
			cancel()
			r.log.Error("input binding read failed", "binding", name, "err", err)
			continue
		}
		r.active[name] = &reader{binding: b, cancel: cancel}
		r.log.Info("reading input binding", "binding", name)
	}
}

// Active lists the bindings being read.
func (r *Runner) Active() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, 0, len(r.active))
	for n := range r.active {
		out = append(out, n)
	}
	return out
}

// fullResponder is implemented by the gRPC channel, whose binding reply
// carries the state and output-binding fields as proto fields.
type fullResponder interface {
	DeliverBindingFull(ctx context.Context, ev *appchannel.BindingEvent) (*runtimev1pb.BindingEventResponse, error)
}

// replyFromProto turns a gRPC app's binding reply into Dapr's AppResponse.
func replyFromProto(p *runtimev1pb.BindingEventResponse) *bindings.AppResponse {
	ar := &bindings.AppResponse{StoreName: p.GetStoreName(), To: p.GetTo()}
	if len(p.GetData()) > 0 {
		ar.Data = json.RawMessage(p.GetData())
		if !json.Valid(p.GetData()) {
			ar.Data = string(p.GetData())
		}
	}
	switch p.GetConcurrency() {
	case runtimev1pb.BindingEventResponse_PARALLEL:
		ar.Concurrency = "parallel"
	default:
		ar.Concurrency = "sequential"
	}
	for _, st := range p.GetStates() {
		req := state.SetRequest{Key: st.GetKey(), Value: st.GetValue(), Metadata: st.GetMetadata()}
		if st.GetEtag() != nil {
			e := st.GetEtag().GetValue()
			req.ETag = &e
		}
		ar.State = append(ar.State, req)
	}
	return ar
}

func (r *Runner) deliver(ctx context.Context, ch appchannel.Channel, name string, resp *bindings.ReadResponse) ([]byte, error) {
	if !r.inflight.Enter() {
		return nil, fmt.Errorf("input binding %s: runtime is shutting down; event not taken", name)
	}
	defer r.inflight.Leave()
	start := time.Now()
	ev := &appchannel.BindingEvent{Name: name, Data: resp.Data, Metadata: resp.Metadata}
	if resp.ContentType != nil && *resp.ContentType != "" {
		if ev.Metadata == nil {
			ev.Metadata = map[string]string{}
		}
		ev.Metadata["content-type"] = *resp.ContentType
	}
	var reply *bindings.AppResponse
	var out []byte
	err := r.inbound(ctx, name, func(ctx context.Context) (err error) {
		reply = nil
		if fr, ok := ch.(fullResponder); ok {
			var p *runtimev1pb.BindingEventResponse
			if p, err = fr.DeliverBindingFull(ctx, ev); err == nil {
				reply = replyFromProto(p)
				out = p.GetData()
			}
			return err
		}
		out, err = ch.DeliverBinding(ctx, ev)
		if err == nil && len(out) > 0 {
			var ar bindings.AppResponse
			if json.Unmarshal(out, &ar) == nil {
				reply = &ar
			}
		}
		return err
	})
	status := "success"
	if err != nil {
		status = "error"
	}
	if r.opts.Metrics != nil {
		r.opts.Metrics.Delivery("binding", name, status, time.Since(start))
	}
	if err != nil {
		return nil, fmt.Errorf("delivering input binding %s event to the app: %w", name, err)
	}
	if reply != nil {
		if err := r.applyReply(ctx, name, reply); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// inbound runs one delivery under the binding's inbound resiliency
// policy, if it has one.
func (r *Runner) inbound(ctx context.Context, name string, op func(context.Context) error) error {
	if rs := r.opts.Resiliency; rs != nil {
		if p := rs.ForComponent(name, "Binding", resiliency.Inbound); !p.Passthrough() {
			return p.Do(ctx, op)
		}
	}
	return op(ctx)
}

// applyReply saves state and calls output bindings as the app asked.
func (r *Runner) applyReply(ctx context.Context, name string, ar *bindings.AppResponse) error {
	if ar.StoreName != "" && len(ar.State) > 0 {
		items := make([]state.SetRequest, len(ar.State))
		copy(items, ar.State)
		for i := range items {
			// AppResponse.Concurrency is about delivery order
			// (sequential/parallel), not state concurrency.
			if v, ok := items[i].Value.(json.RawMessage); ok {
				items[i].Value = []byte(v)
			}
		}
		if err := r.opts.Blocks.SaveState(ctx, ar.StoreName, items); err != nil {
			return fmt.Errorf("input binding %s: saving state the app returned: %w", name, err)
		}
	}
	if len(ar.To) > 0 {
		var data []byte
		if ar.Data != nil {
			data, _ = json.Marshal(ar.Data)
		}
		for _, to := range ar.To {
			if _, err := r.opts.Blocks.InvokeBinding(ctx, to, string(bindings.CreateOperation), data, nil); err != nil {
				r.log.Error("output binding the app asked for failed", "from", name, "to", to, "err", err)
			}
		}
	}
	return nil
}

// Drain stops reading and waits for events under way.
func (r *Runner) Drain(ctx context.Context) {
	r.mu.Lock()
	r.draining = true
	for n, rd := range r.active {
		rd.cancel()
		delete(r.active, n)
	}
	r.mu.Unlock()
	if !r.inflight.Close(ctx) {
		r.log.Warn("shutdown: input binding events still in flight at the drain deadline")
	}
	r.deliverCancel()
}

// Pause stops every reader; the next Sync starts them again.
func (r *Runner) Pause() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for n, rd := range r.active {
		rd.cancel()
		delete(r.active, n)
	}
}
