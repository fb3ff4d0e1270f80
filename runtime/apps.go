package runtime

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"mecha/components"
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
	// Command, when set, is the app's process, which the runtime starts
	// in Dir with Env added once the app's API ports listen (a multi-app
	// run template's apps; the --app-id app's is after "--").
	Command []string
	Dir     string
	Env     []string
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
