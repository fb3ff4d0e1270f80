// Package apicatalog is the part of a runtime's catalog cache (the
// membership's catalog.json) that apps read: the API endpoints of the
// runtimes of its DC. The Go SDK reads it to reach another runtime of the
// DC while its own restarts; the runtime names the file to its app in
// EnvFile. It is a leaf package so that the SDK does not link the
// runtime.
package apicatalog

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strconv"
)

// EnvFile is the environment variable naming the cache file to an app
// started by its runtime.
const EnvFile = "MECHA_CATALOG"

// Endpoint is one runtime's API: where its app-facing HTTP and gRPC
// ports listen. Addr is the runtime's advertised address; the ports are
// reachable there only when the API listens beyond loopback
// (--dapr-listen-addresses), or on one host.
type Endpoint struct {
	Node     string `json:"node"`
	Addr     string `json:"addr"`
	HTTPPort int    `json:"httpPort,omitempty"`
	GRPCPort int    `json:"grpcPort,omitempty"`
	// Apps are the app-ids the runtime hosts. The ports are its first
	// app's: another app of the same runtime has ports of its own.
	Apps []string `json:"apps,omitempty"`
}

// Serves reports whether the endpoint is the API of app: the runtime
// hosts app and nothing else, so its ports are app's. An SDK falls back
// only to such a runtime, whose calls act as the same app (state keys,
// caller id, subscriptions).
func (e Endpoint) Serves(app string) bool { return app != "" && len(e.Apps) == 1 && e.Apps[0] == app }

// GRPC is the endpoint's gRPC API address, "" without one.
func (e Endpoint) GRPC() string { return hostPort(e.Addr, e.GRPCPort) }

// HTTP is the endpoint's HTTP API address, "" without one.
func (e Endpoint) HTTP() string { return hostPort(e.Addr, e.HTTPPort) }

func hostPort(addr string, port int) string {
	if addr == "" || port <= 0 {
		return ""
	}
	return net.JoinHostPort(addr, strconv.Itoa(port))
}

// File is what an app reads of the cache file: the runtime that wrote
// it and the API endpoints of its DC's live runtimes (its own included).
type File struct {
	Node string     `json:"node"`
	DC   string     `json:"dc"`
	APIs []Endpoint `json:"apis,omitempty"`
}

// maxFile bounds what Read takes: the cache of a DC of a few thousand
// runtimes.
const maxFile = 64 << 20

// Read reads the API endpoints of the cache file at path.
func Read(path string) (File, error) {
	st, err := os.Stat(path)
	if err != nil {
		return File{}, err
	}
	if st.Size() > maxFile {
		return File{}, fmt.Errorf("apicatalog: %s is %d bytes, more than %d", path, st.Size(), maxFile)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return File{}, err
	}
	var f File
	if err := json.Unmarshal(b, &f); err != nil {
		return File{}, fmt.Errorf("apicatalog: %s: %w", path, err)
	}
	return f, nil
}
