package runtime

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"sigs.k8s.io/yaml"
)

// runApp is one app of Dapr's multi-app run template (`dapr run -f`),
// and its common block. Fields Dapr's template has that mecha has no use
// for (log destinations, container images, …) are accepted and named in
// a log line.
type runApp struct {
	AppID                string            `json:"appID"`
	AppDirPath           string            `json:"appDirPath"`
	AppPort              int               `json:"appPort"`
	AppProtocol          string            `json:"appProtocol"`
	AppChannelAddress    string            `json:"appChannelAddress"`
	Command              []string          `json:"command"`
	Env                  map[string]string `json:"env"`
	ResourcesPath        string            `json:"resourcesPath"`
	ResourcesPaths       []string          `json:"resourcesPaths"`
	ConfigFilePath       string            `json:"configFilePath"`
	DaprHTTPPort         int               `json:"daprHTTPPort"`
	DaprGRPCPort         int               `json:"daprGRPCPort"`
	EnableAppHealthCheck bool              `json:"enableAppHealthCheck"`
	AppHealthCheckPath   string            `json:"appHealthCheckPath"`
	AppHealthProbeIntvl  int               `json:"appHealthProbeInterval"`
	AppHealthProbeTmout  int               `json:"appHealthProbeTimeout"`
	AppHealthThreshold   int               `json:"appHealthThreshold"`
	LogLevel             string            `json:"logLevel"`
	MetricsPort          int               `json:"metricsPort"`
	EnableAPILogging     bool              `json:"enableApiLogging"`
}

// runFile is the template: version, common, apps.
type runFile struct {
	Version int      `json:"version"`
	Common  runApp   `json:"common"`
	Apps    []runApp `json:"apps"`
}

// RunFileName is what a folder given to `mecha run -f` holds, as with
// `dapr run -f`.
const RunFileName = "dapr.yaml"

// ApplyRunFile fills cfg from a multi-app run template (a file, or a
// folder holding dapr.yaml), as `dapr run -f` reads it: every app runs
// on this one runtime with its own API ports (free ones unless the
// template gives daprHTTPPort/daprGRPCPort), its command started in its
// appDirPath with DAPR_HTTP_PORT, DAPR_GRPC_PORT, APP_ID and the env of
// the common block and its own. Paths are relative to the template's
// folder. The resources paths of the common block and the apps are all
// loaded (once each). It returns the template fields mecha ignores.
func ApplyRunFile(path string, cfg *Config) (ignored []string, err error) {
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		path = filepath.Join(path, RunFileName)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: -f %s: %v", ErrConfig, path, err)
	}
	js, err := yaml.YAMLToJSON(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: -f %s: %v", ErrConfig, path, err)
	}
	var rf runFile
	if err := json.Unmarshal(js, &rf); err != nil {
		return nil, fmt.Errorf("%w: -f %s: %v", ErrConfig, path, strings.TrimPrefix(err.Error(), "json: "))
	}
	ignored = unknownFields(js)
	if len(rf.Apps) == 0 {
		return nil, fmt.Errorf("%w: -f %s: apps: the template names no app", ErrConfig, path)
	}
	base := filepath.Dir(path)
	abs := func(p string) string {
		if p == "" || filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(base, p)
	}
	var resources []string
	addRes := func(a runApp) {
		for _, p := range append([]string{a.ResourcesPath}, a.ResourcesPaths...) {
			if p = abs(p); p != "" && !slices.Contains(resources, p) {
				resources = append(resources, p)
			}
		}
	}
	addRes(rf.Common)
	seen := map[string]bool{}
	var specs []AppSpec
	for i, a := range rf.Apps {
		where := fmt.Sprintf("-f %s: apps[%d]", path, i)
		if a.AppID == "" {
			return nil, fmt.Errorf("%w: %s: appID must be set", ErrConfig, where)
		}
		if seen[a.AppID] {
			return nil, fmt.Errorf("%w: %s: appID %q is used twice", ErrConfig, where, a.AppID)
		}
		seen[a.AppID] = true
		addRes(a)
		proto := firstOf(a.AppProtocol, rf.Common.AppProtocol, "http")
		if proto != "http" && proto != "grpc" {
			return nil, fmt.Errorf("%w: %s (%s): appProtocol %q is not http or grpc", ErrConfig, where, a.AppID, proto)
		}
		env := map[string]string{}
		for k, v := range rf.Common.Env {
			env[k] = v
		}
		for k, v := range a.Env {
			env[k] = v
		}
		keys := make([]string, 0, len(env))
		for k := range env {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var envList []string
		for _, k := range keys {
			envList = append(envList, k+"="+env[k])
		}
		dir := abs(firstOf(a.AppDirPath, rf.Common.AppDirPath, "."))
		if st, err := os.Stat(dir); err != nil || !st.IsDir() {
			return nil, fmt.Errorf("%w: %s (%s): appDirPath %s is not a folder", ErrConfig, where, a.AppID, dir)
		}
		specs = append(specs, AppSpec{ID: a.AppID, Port: a.AppPort, Protocol: proto, HTTPPort: a.DaprHTTPPort, GRPCPort: a.DaprGRPCPort,
			Command: a.Command, Dir: dir, Env: envList})
	}
	first := specs[0]
	cfg.AppID, cfg.AppPort, cfg.AppProtocol = first.ID, first.Port, first.Protocol
	cfg.HTTPPort, cfg.GRPCPort = first.HTTPPort, first.GRPCPort
	cfg.Command, cfg.CommandDir, cfg.CommandEnv = first.Command, first.Dir, first.Env
	cfg.Apps = append(cfg.Apps, specs[1:]...)
	cfg.ResourcesPaths = append(cfg.ResourcesPaths, resources...)
	if c := rf.Common; c.ConfigFilePath != "" && cfg.ConfigFile == "" {
		cfg.ConfigFile = abs(c.ConfigFilePath)
	}
	if rf.Common.EnableAppHealthCheck || slices.ContainsFunc(rf.Apps, func(a runApp) bool { return a.EnableAppHealthCheck }) {
		cfg.EnableAppHealthCheck = true
	}
	if p := firstOf(rf.Apps[0].AppHealthCheckPath, rf.Common.AppHealthCheckPath); p != "" {
		cfg.AppHealthCheckPath = p
	}
	if rf.Common.LogLevel != "" {
		cfg.LogLevel = rf.Common.LogLevel
	}
	if rf.Common.EnableAPILogging {
		cfg.APILogging = true
	}
	return ignored, nil
}

func firstOf(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}

// unknownFields names the template's fields that runApp does not read.
func unknownFields(js []byte) []string {
	known := map[string]bool{}
	t := jsonFields(runApp{})
	for _, f := range t {
		known[f] = true
	}
	var doc struct {
		Common map[string]json.RawMessage   `json:"common"`
		Apps   []map[string]json.RawMessage `json:"apps"`
		Rest   map[string]json.RawMessage   `json:"-"`
	}
	_ = json.Unmarshal(js, &doc)
	var out []string
	add := func(where string, m map[string]json.RawMessage) {
		for k := range m {
			if !known[k] {
				out = append(out, where+"."+k)
			}
		}
	}
	add("common", doc.Common)
	for i, a := range doc.Apps {
		add(fmt.Sprintf("apps[%d]", i), a)
	}
	sort.Strings(out)
	return out
}

// jsonFields lists a struct's JSON field names.
func jsonFields(v any) []string {
	b, _ := json.Marshal(v)
	var m map[string]json.RawMessage
	_ = json.NewDecoder(bytes.NewReader(b)).Decode(&m)
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
