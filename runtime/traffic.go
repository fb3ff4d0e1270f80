package runtime

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"mecha/components"
	"mecha/runtime/invoke"
	"mecha/runtime/membership"
)

// TrafficKind is the document kind of a traffic policy
// (apiVersion mecha.io/v1alpha1): spec is an invoke.TrafficSpec.
const TrafficKind = "TrafficPolicy"

// fileSpec is a traffic policy read from a file, stamped with the
// file's modification time: a runtime that starts again with the same
// file sets the same stamp, which does not undo a newer change made
// through the admin API.
type fileSpec struct {
	spec  invoke.TrafficSpec
	stamp uint64
}

// trafficSpecs reads the TrafficPolicy documents of the resources path,
// naming the file and field of a bad one.
func trafficSpecs(docs []components.Document) ([]fileSpec, error) {
	var out []fileSpec
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
		stamp := uint64(time.Now().UnixMilli())
		if fi, err := os.Stat(d.File); err == nil {
			stamp = uint64(fi.ModTime().UnixMilli())
		}
		out = append(out, fileSpec{spec, stamp})
	}
	return out, nil
}

// applyTrafficFiles spreads the file policies that are new or changed
// since the files were last read: a reload that leaves a policy as it was
// does not undo a change made since through the admin API.
func (r *Runtime) applyTrafficFiles(specs []fileSpec) {
	if r.trafficFiles == nil {
		r.trafficFiles = map[string]string{}
	}
	for _, f := range specs {
		b, _ := json.Marshal(f.spec)
		if r.trafficFiles[f.spec.App] == string(b) {
			continue
		}
		r.trafficFiles[f.spec.App] = string(b)
		r.setTraffic(f.spec, f.stamp)
	}
}

// setTraffic spreads a traffic policy to the cluster; the newest setting
// (by stamp, ms since the epoch) of an app's policy wins everywhere.
func (r *Runtime) setTraffic(spec invoke.TrafficSpec, stamp uint64) {
	b, _ := json.Marshal(spec)
	r.node.SetTraffic(membership.TrafficRule{App: spec.App, Stamp: stamp, Spec: b})
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
		r.setTraffic(spec, uint64(time.Now().UnixMilli()))
		reply(http.StatusOK, spec)
	case http.MethodDelete:
		r.node.SetTraffic(membership.TrafficRule{App: app, Stamp: uint64(time.Now().UnixMilli())})
		w.WriteHeader(http.StatusNoContent)
	default:
		reply(http.StatusMethodNotAllowed, map[string]string{"error": "use GET, PUT or DELETE"})
	}
}
