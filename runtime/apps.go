package runtime

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"mecha/components"
	"mecha/runtime/api"
	grpcapi "mecha/runtime/api/grpc"
	httpapi "mecha/runtime/api/http"
	"mecha/runtime/appchannel"
	"mecha/runtime/blocks"
	"mecha/runtime/invoke"
	"mecha/runtime/membership"
	"mecha/runtime/subscriptions"
)

// AppSpec is one more app the runtime serves on its host, besides the
// one of --app-id: `--app id=ID,port=PORT[,protocol=http|grpc]
// [,http-port=N][,grpc-port=N]`. Each has its own API port pair (0, the
// default, picks free ports, logged in an "app API listening" line), so
// the runtime knows which app calls: its state keys are its own, its
// subscriptions use its app-id as consumer group, and other apps see its
// app-id as the caller.
type AppSpec struct {
	ID       string
	Port     int
	Protocol string
	HTTPPort int
	GRPCPort int
}

// appList is the repeatable --app flag.
type appList struct{ v *[]AppSpec }

func (l appList) String() string {
	if l.v == nil {
		return ""
	}
	var out []string
	for _, a := range *l.v {
		out = append(out, fmt.Sprintf("id=%s,port=%d,protocol=%s", a.ID, a.Port, a.Protocol))
	}
	return strings.Join(out, " ")
}

// appDocument is an App in a resources path: the same as an --app flag.
//
//	apiVersion: mecha.io/v1alpha1
//	kind: App
//	metadata: {name: billing}
//	spec: {port: 3001, protocol: http, httpPort: 0, grpcPort: 0}
type appDocument struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Spec struct {
		Port     int    `json:"port"`
		Protocol string `json:"protocol,omitempty"`
		HTTPPort int    `json:"httpPort,omitempty"`
		GRPCPort int    `json:"grpcPort,omitempty"`
	} `json:"spec"`
}

// appSpecs reads the App documents of the resources path and adds them to
// the apps of the flags, naming the file and field of a bad one.
func appSpecs(docs []components.Document, flags []AppSpec, primary string) ([]AppSpec, error) {
	out := append([]AppSpec(nil), flags...)
	seen := map[string]bool{primary: true}
	for _, a := range flags {
		seen[a.ID] = true
	}
	for _, d := range docs {
		if d.Kind != "App" {
			continue
		}
		var doc appDocument
		dec := json.NewDecoder(bytes.NewReader(d.Raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&doc); err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrConfig, d.Where(), strings.TrimPrefix(err.Error(), "json: "))
		}
		var specs []AppSpec
		v := fmt.Sprintf("id=%s,port=%d,http-port=%d,grpc-port=%d", doc.Metadata.Name, doc.Spec.Port, doc.Spec.HTTPPort, doc.Spec.GRPCPort)
		if doc.Spec.Protocol != "" {
			v += ",protocol=" + doc.Spec.Protocol
		}
		if err := (appList{&specs}).Set(v); err != nil {
			return nil, fmt.Errorf("%w: %s: app %q: %v", ErrConfig, d.Where(), doc.Metadata.Name, err)
		}
		if seen[specs[0].ID] {
			return nil, fmt.Errorf("%w: %s: metadata.name: app-id %q is already served by this runtime", ErrConfig, d.Where(), specs[0].ID)
		}
		seen[specs[0].ID] = true
		out = append(out, specs[0])
	}
	return out, nil
}

// Set parses one --app value, naming what is wrong.
func (l appList) Set(v string) error {
	a := AppSpec{Protocol: "http"}
	for _, kv := range strings.Split(v, ",") {
		k, val, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok {
			return fmt.Errorf("%q: want key=value pairs (id=…,port=…,protocol=…)", kv)
		}
		num := func() (int, error) {
			n, err := strconv.Atoi(val)
			if err != nil || n < 0 || n > 65535 {
				return 0, fmt.Errorf("%s=%q is not a port", k, val)
			}
			return n, nil
		}
		var err error
		switch k {
		case "id":
			a.ID = val
		case "port":
			a.Port, err = num()
		case "protocol":
			a.Protocol = val
		case "http-port":
			a.HTTPPort, err = num()
		case "grpc-port":
			a.GRPCPort, err = num()
		default:
			return fmt.Errorf("unknown key %q (want id, port, protocol, http-port, grpc-port)", k)
		}
		if err != nil {
			return err
		}
	}
	switch {
	case a.ID == "" || strings.ContainsAny(a.ID, "|/ "):
		return fmt.Errorf("id %q: must be set, without '|', '/' or spaces", a.ID)
	case a.Port == 0:
		return fmt.Errorf("app %q: port must be set", a.ID)
	case a.Protocol != "http" && a.Protocol != "grpc":
		return fmt.Errorf("app %q: protocol %q is not http or grpc", a.ID, a.Protocol)
	}
	*l.v = append(*l.v, a)
	return nil
}

// hostedApp is one more app's share of the runtime: its own API servers,
// app channel, state key prefix and subscriptions.
type hostedApp struct {
	spec     AppSpec
	local    *invoke.Local
	subs     *subscriptions.Manager
	http     *httpapi.Server
	grpc     *grpcapi.Server
	httpAddr net.Addr
	grpcAddr net.Addr
}

// appMetadata is the metadata API of a hosted app: the runtime's, under
// the app's id.
type appMetadata struct {
	r  *Runtime
	id string
}

func (m appMetadata) Metadata() *api.Metadata {
	md := m.r.Metadata()
	md.ID = m.id
	return md
}

func (m appMetadata) SetExtended(k, v string) { m.r.SetExtended(k, v) }

// startHostedApps listens on each hosted app's ports and serves its APIs.
func (r *Runtime) startHostedApps(docs []components.Document, cluster func(*invoke.Local) *invoke.Cluster,
	serve func(name string, f func() error)) error {
	for _, spec := range r.cfg.Apps {
		declared, err := subscriptions.ParseDeclarative(docs, spec.ID)
		if err != nil {
			return err
		}
		a := &hostedApp{spec: spec, local: &invoke.Local{AppID: spec.ID}}
		a.subs = subscriptions.New(subscriptions.Options{AppID: spec.ID, Components: r.comps, Metrics: r.metrics, Logger: r.log.With("app_id", spec.ID)})
		a.subs.SetDeclarative(declared)
		deps := &api.Deps{
			AppID: spec.ID, Blocks: &blocks.Blocks{AppID: spec.ID, Components: r.comps, Log: r.log, OwnPrefix: true}, Local: a.local,
			Invoker: &invoke.Invoker{Resolver: cluster(a.local), AppID: spec.ID, Resiliency: r.resil},
			Subs:    a.subs, Metrics: r.metrics, Log: r.log.With("app_id", spec.ID), Metadata: appMetadata{r, spec.ID},
			APILogging: r.cfg.APILogging, MaxRequestBytes: r.cfg.MaxRequestSizeMB << 20, Shutdown: r.Shutdown,
			Ready: r.ready.Load, OutboundReady: r.outbound.Load, APIToken: r.cfg.APIToken, Resiliency: r.resil,
		}
		deps.GRPCProxy = r.grpcDirector(spec.ID, deps.Invoker.Resolver.(*invoke.Cluster), r.peerToken)
		hl, err := net.Listen("tcp", net.JoinHostPort(r.cfg.ListenAddress, strconv.Itoa(spec.HTTPPort)))
		if err != nil {
			return fmt.Errorf("--app %s: http-port %d: %w", spec.ID, spec.HTTPPort, err)
		}
		gl, err := net.Listen("tcp", net.JoinHostPort(r.cfg.ListenAddress, strconv.Itoa(spec.GRPCPort)))
		if err != nil {
			hl.Close()
			return fmt.Errorf("--app %s: grpc-port %d: %w", spec.ID, spec.GRPCPort, err)
		}
		a.httpAddr, a.grpcAddr = hl.Addr(), gl.Addr()
		a.http, a.grpc = httpapi.New(deps), grpcapi.New(deps)
		serve("http "+spec.ID, func() error { return a.http.Serve(hl) })
		serve("grpc "+spec.ID, func() error { return a.grpc.Serve(gl) })
		r.log.Info("app API listening", "app", spec.ID, "http_port", port(a.httpAddr), "grpc_port", port(a.grpcAddr), "app_port", spec.Port)
		r.hosted = append(r.hosted, a)
	}
	return nil
}

// connectHostedApps waits for each hosted app, then publishes it as
// healthy and starts its deliveries. Each app is connected on its own
// goroutine, owned by workers.
func (r *Runtime) connectHostedApps(ctx context.Context, workers *sync.WaitGroup) {
	for _, a := range r.hosted {
		workers.Add(1)
		go func() {
			defer workers.Done()
			addr := net.JoinHostPort(r.cfg.AppChannelAddress, strconv.Itoa(a.spec.Port))
			ch, err := r.dialApp(ctx, addr, a.spec.Protocol)
			if err != nil {
				if ctx.Err() == nil {
					r.log.Error("app channel", "app", a.spec.ID, "error", err)
				}
				return
			}
			a.local.SetChannel(ch)
			start := func() {
				r.setAppHealth(a.spec.ID, true)
				sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				subs, err := ch.Subscriptions(sctx)
				cancel()
				if err != nil {
					r.log.Error("reading the app's subscriptions", "app", a.spec.ID, "error", err)
				}
				a.subs.SetApp(ch, subs)
				a.subs.Sync(ctx)
				r.log.Info("app ready", "app", a.spec.ID, "app_port", a.spec.Port)
			}
			if !r.cfg.EnableAppHealthCheck {
				start()
				return
			}
			r.watchHealth(ctx, ch, start, func(err error) {
				r.setAppHealth(a.spec.ID, false)
				r.log.Warn("app is unhealthy; pausing deliveries", "app", a.spec.ID, "error", err)
				a.subs.Pause()
			})
		}()
	}
}

// stopHostedApps drains the hosted apps' deliveries and stops their
// servers.
func (r *Runtime) stopHostedApps(grace context.Context) {
	for _, a := range r.hosted {
		a.subs.Drain(grace)
		_ = a.http.Shutdown(grace)
		a.grpc.GracefulStop(grace)
		if ch := a.local.Channel(); ch != nil {
			_ = ch.Close()
		}
	}
}

// appChannel finds the channel of an app this runtime hosts, for the
// internal port.
func (r *Runtime) appChannel(id string) (func() appchannel.Channel, bool) {
	if id == r.cfg.AppID {
		return r.local.Channel, true
	}
	for _, a := range r.hosted {
		if a.local.IsSelf(id) {
			return a.local.Channel, true
		}
	}
	return nil, false
}

// setAppHealth publishes the health of one of this runtime's apps in the
// catalog, with the others'.
func (r *Runtime) setAppHealth(id string, healthy bool) {
	r.appsMu.Lock()
	defer r.appsMu.Unlock()
	if r.appHealth == nil {
		r.appHealth = map[string]bool{}
	}
	r.appHealth[id] = healthy
	if r.node == nil {
		return
	}
	apps := make([]membership.App, 0, len(r.appHealth))
	for id, h := range r.appHealth {
		apps = append(apps, membership.App{ID: id, Healthy: h})
	}
	r.node.SetLocalApps(apps)
}
