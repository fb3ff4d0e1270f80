package runtime

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"mecha/components"
	"mecha/runtime/invoke"
	"mecha/runtime/membership"
)

// TrafficKind is the document kind of a traffic policy
// (apiVersion mecha.io/v1alpha1): spec is an invoke.TrafficSpec.
const TrafficKind = "TrafficPolicy"

// trafficSpecs reads the TrafficPolicy documents of the resources path,
// naming the file and field of a bad one.
func trafficSpecs(docs []components.Document) ([]invoke.TrafficSpec, error) {
	var out []invoke.TrafficSpec
	for _, d := range docs {
		if d.Kind != TrafficKind {
			continue
		}
		var doc struct {
			Spec json.RawMessage `json:"spec"`
		}
		if err := json.Unmarshal(d.Raw, &doc); err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrConfig, d.Where(), err)
		}
		spec, err := invoke.ParseTraffic(doc.Spec)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrConfig, d.Where(), err)
		}
		out = append(out, spec)
	}
	return out, nil
}

// applyTrafficFiles spreads the file policies that are new or changed
// since the files were last read: a reload that leaves a policy as it was
// does not undo a change made since through the admin API.
func (r *Runtime) applyTrafficFiles(specs []invoke.TrafficSpec) {
	if r.trafficFiles == nil {
		r.trafficFiles = map[string]string{}
	}
	for _, spec := range specs {
		b, _ := json.Marshal(spec)
		if r.trafficFiles[spec.App] == string(b) {
			continue
		}
		r.trafficFiles[spec.App] = string(b)
		r.setTraffic(spec)
	}
}

// setTraffic spreads a traffic policy to the cluster; the newest setting
// of an app's policy wins everywhere.
func (r *Runtime) setTraffic(spec invoke.TrafficSpec) {
	b, _ := json.Marshal(spec)
	r.node.SetTraffic(membership.TrafficRule{App: spec.App, Stamp: uint64(time.Now().UnixMilli()), Spec: b})
}

// trafficAPI serves the traffic policies on the admin (metrics) port:
//
//	GET    /v1.0-alpha1/traffic/{app}   the policy in force for calls to app
//	PUT    /v1.0-alpha1/traffic/{app}   set it (body: the spec; app may be left out)
//	DELETE /v1.0-alpha1/traffic/{app}   clear it
//
// A change is spread by gossip and applied by every runtime, usually
// within a second.
func (r *Runtime) trafficAPI(w http.ResponseWriter, req *http.Request) {
	app := strings.Trim(strings.TrimPrefix(req.URL.Path, "/v1.0-alpha1/traffic/"), "/")
	reply := func(code int, v any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(v)
	}
	if app == "" || strings.Contains(app, "/") {
		reply(http.StatusNotFound, map[string]string{"error": "want /v1.0-alpha1/traffic/{app}"})
		return
	}
	switch req.Method {
	case http.MethodGet:
		rule, ok := r.node.Traffic(app)
		if !ok {
			reply(http.StatusNotFound, map[string]string{"error": fmt.Sprintf("no traffic policy for %q", app)})
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(rule.Spec)
	case http.MethodPut:
		b, err := io.ReadAll(io.LimitReader(req.Body, 64<<10))
		if err != nil {
			reply(http.StatusBadRequest, map[string]string{"error": err.Error()})
			return
		}
		var probe map[string]any
		if json.Unmarshal(b, &probe) == nil && probe["app"] == nil {
			probe["app"] = app
			b, _ = json.Marshal(probe)
		}
		spec, err := invoke.ParseTraffic(b)
		if err == nil && spec.App != app {
			err = fmt.Errorf("spec.app %q is not the path's %q", spec.App, app)
		}
		if err != nil {
			reply(http.StatusBadRequest, map[string]string{"error": err.Error()})
			return
		}
		r.setTraffic(spec)
		reply(http.StatusOK, spec)
	case http.MethodDelete:
		r.node.SetTraffic(membership.TrafficRule{App: app, Stamp: uint64(time.Now().UnixMilli())})
		w.WriteHeader(http.StatusNoContent)
	default:
		reply(http.StatusMethodNotAllowed, map[string]string{"error": "use GET, PUT or DELETE"})
	}
}
