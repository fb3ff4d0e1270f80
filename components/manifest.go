// Package components loads Dapr resource YAML (Component, Subscription,
// Configuration), maps each component's spec.type@version to a constructor,
// initializes the components and keeps the live set current while files
// change on disk (hot reload).
package components

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"sigs.k8s.io/yaml"
)

// ErrInvalidResource is wrapped by every error about a resource file that
// cannot be used: bad YAML, a missing or malformed field, an unknown type.
var ErrInvalidResource = errors.New("invalid resource")

// Document is one YAML document of a resource file, with its kind decoded
// and the rest kept raw for the consumer of that kind.
type Document struct {
	// File is the path the document came from, for error messages.
	File string
	// Index is the position of the document inside a multi-document file.
	Index int
	// APIVersion and Kind identify the resource (dapr.io/v1alpha1 Component, ...).
	APIVersion string
	Kind       string
	// Raw is the document converted to JSON.
	Raw []byte
}

// Where names the document for error messages: the file, and the document
// number when the file holds more than one.
func (d Document) Where() string {
	if d.Index == 0 {
		return d.File
	}
	return fmt.Sprintf("%s (document %d)", d.File, d.Index+1)
}

// ObjectMeta is the metadata block every resource has.
type ObjectMeta struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace,omitempty"`
	// Labels and Annotations are accepted, as in Kubernetes manifests,
	// and not used.
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// Component is a dapr.io/v1alpha1 Component.
type Component struct {
	APIVersion string        `json:"apiVersion"`
	Kind       string        `json:"kind"`
	Metadata   ObjectMeta    `json:"metadata"`
	Spec       ComponentSpec `json:"spec"`
	Auth       Auth          `json:"auth,omitempty"`
	Scopes     []string      `json:"scopes,omitempty"`

	// File is where the component was declared; empty for embedded defaults.
	File string `json:"-"`
}

// ComponentSpec is the spec block of a Component.
type ComponentSpec struct {
	Type         string         `json:"type"`
	Version      string         `json:"version,omitempty"`
	IgnoreErrors bool           `json:"ignoreErrors,omitempty"`
	InitTimeout  string         `json:"initTimeout,omitempty"`
	Metadata     []MetadataItem `json:"metadata,omitempty"`
}

// Auth names the secret store that resolves secretKeyRef values.
type Auth struct {
	SecretStore string `json:"secretStore,omitempty"`
}

// MetadataItem is one name/value pair of a component's metadata. Exactly one
// of Value, SecretKeyRef and EnvRef supplies the value.
type MetadataItem struct {
	Name         string        `json:"name"`
	Value        DynamicValue  `json:"value,omitempty"`
	SecretKeyRef *SecretKeyRef `json:"secretKeyRef,omitempty"`
	EnvRef       string        `json:"envRef,omitempty"`
}

// SecretKeyRef points at a key of a secret in the component's secret store.
type SecretKeyRef struct {
	Name string `json:"name"`
	Key  string `json:"key,omitempty"`
}

// DynamicValue is a metadata value written as any YAML scalar (string,
// number or bool); components see it as a string, as in Dapr.
type DynamicValue struct {
	S   string
	Set bool
}

// UnmarshalJSON accepts strings, numbers, booleans and null.
func (v *DynamicValue) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) == 0 || string(b) == "null" {
		return nil
	}
	v.Set = true
	if b[0] == '"' {
		return json.Unmarshal(b, &v.S)
	}
	if b[0] == '{' || b[0] == '[' {
		// Dapr passes structured values through as their JSON text.
		v.S = string(b)
		return nil
	}
	v.S = string(b)
	return nil
}

// MarshalJSON writes the value as a JSON string.
func (v DynamicValue) MarshalJSON() ([]byte, error) { return json.Marshal(v.S) }

// TypeVersion is the registry key of the component: "state.redis@v1".
func (c *Component) TypeVersion() string {
	v := c.Spec.Version
	if v == "" {
		v = "v1"
	}
	return c.Spec.Type + "@" + v
}

// Category is the building block of the component: state, pubsub,
// bindings or secretstores (the part of spec.type before the first dot).
func (c *Component) Category() string {
	t := c.Spec.Type
	if i := strings.IndexByte(t, '.'); i > 0 {
		return t[:i]
	}
	return t
}

// InitTimeoutDuration is spec.initTimeout, 5s when unset.
func (c *Component) InitTimeoutDuration() time.Duration {
	if c.Spec.InitTimeout == "" {
		return 5 * time.Second
	}
	d, err := time.ParseDuration(c.Spec.InitTimeout)
	if err != nil || d <= 0 {
		return 5 * time.Second
	}
	return d
}

// validate checks the fields every component needs, naming the bad field.
func (c *Component) validate() error {
	if c.Metadata.Name == "" {
		return fmt.Errorf("metadata.name: must be set")
	}
	if strings.Contains(c.Metadata.Name, "||") {
		return fmt.Errorf("metadata.name: %q must not contain '||'", c.Metadata.Name)
	}
	if c.Spec.Type == "" {
		return fmt.Errorf("spec.type: must be set")
	}
	if !strings.Contains(c.Spec.Type, ".") {
		return fmt.Errorf("spec.type: %q is not of the form <building block>.<name>", c.Spec.Type)
	}
	if c.Spec.InitTimeout != "" {
		if d, err := time.ParseDuration(c.Spec.InitTimeout); err != nil || d <= 0 {
			return fmt.Errorf("spec.initTimeout: %q is not a positive duration", c.Spec.InitTimeout)
		}
	}
	if c.Category() == CategoryState && strings.Contains(strategy(c), "||") {
		return fmt.Errorf("spec.metadata keyPrefix %q must not contain '||'", strategy(c))
	}
	for i, m := range c.Spec.Metadata {
		if m.Name == "" {
			return fmt.Errorf("spec.metadata[%d].name: must be set", i)
		}
		n := 0
		if m.Value.Set {
			n++
		}
		if m.SecretKeyRef != nil {
			n++
			if m.SecretKeyRef.Name == "" {
				return fmt.Errorf("spec.metadata[%d].secretKeyRef.name: must be set", i)
			}
		}
		if m.EnvRef != "" {
			n++
		}
		if n > 1 {
			return fmt.Errorf("spec.metadata[%d] (%s): set only one of value, secretKeyRef and envRef", i, m.Name)
		}
	}
	return nil
}

// DecodeComponent decodes and validates a Component document. Errors name
// the file and the field.
func DecodeComponent(d Document) (*Component, error) {
	var c Component
	if err := strictUnmarshal(d.Raw, &c); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrInvalidResource, d.Where(), err)
	}
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("%w: %s: component %q: %v", ErrInvalidResource, d.Where(), c.Metadata.Name, err)
	}
	c.File = d.File
	return &c, nil
}

func strictUnmarshal(raw []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return describeJSONError(err)
	}
	return nil
}

// describeJSONError turns encoding/json's messages into ones that name the
// YAML field path.
func describeJSONError(err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		field := te.Field
		if field == "" {
			field = "(document)"
		}
		return fmt.Errorf("field %s: expected %s, got a %s", field, te.Type, te.Value)
	}
	msg := err.Error()
	if strings.HasPrefix(msg, "json: unknown field ") {
		return fmt.Errorf("unknown field %s", strings.TrimPrefix(msg, "json: unknown field "))
	}
	return errors.New(strings.TrimPrefix(msg, "json: "))
}

// ReadDocuments reads every *.yaml and *.yml file directly inside the given
// folders (not recursively, as Dapr does), in name order, and splits
// multi-document files. A document that is not valid YAML or lacks
// apiVersion/kind is an error naming the file.
func ReadDocuments(dirs []string) ([]Document, error) {
	var out []Document
	for _, dir := range dirs {
		entries, err := os.ReadDir(dir)
		if err != nil {
			return nil, fmt.Errorf("%w: resources path %s: %v", ErrInvalidResource, dir, err)
		}
		names := make([]string, 0, len(entries))
		for _, e := range entries {
			if e.IsDir() {
				continue
			}
			ext := strings.ToLower(filepath.Ext(e.Name()))
			if ext == ".yaml" || ext == ".yml" {
				names = append(names, e.Name())
			}
		}
		sort.Strings(names)
		for _, n := range names {
			path := filepath.Join(dir, n)
			b, err := os.ReadFile(path)
			if err != nil {
				return nil, fmt.Errorf("%w: %s: %v", ErrInvalidResource, path, err)
			}
			docs, err := SplitDocuments(path, b)
			if err != nil {
				return nil, err
			}
			out = append(out, docs...)
		}
	}
	return out, nil
}

// SplitDocuments parses a YAML file that may hold several documents
// separated by "---" lines. Empty documents are skipped.
func SplitDocuments(path string, b []byte) ([]Document, error) {
	var out []Document
	idx := 0
	for _, part := range splitYAML(b) {
		if len(bytes.TrimSpace(stripComments(part))) == 0 {
			continue
		}
		d := Document{File: path, Index: idx}
		idx++
		raw, err := yaml.YAMLToJSON(part)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: not valid YAML: %v", ErrInvalidResource, d.Where(), err)
		}
		var head struct {
			APIVersion string          `json:"apiVersion"`
			Kind       string          `json:"kind"`
			Apps       json.RawMessage `json:"apps"`
		}
		if err := json.Unmarshal(raw, &head); err != nil {
			return nil, fmt.Errorf("%w: %s: expected a mapping with apiVersion and kind: %v", ErrInvalidResource, d.Where(), describeJSONError(err))
		}
		if head.Kind == "" && head.APIVersion == "" && head.Apps != nil {
			continue // a multi-app run template (dapr.yaml) beside the components
		}
		if head.Kind == "" {
			return nil, fmt.Errorf("%w: %s: field kind: must be set", ErrInvalidResource, d.Where())
		}
		if head.APIVersion == "" {
			return nil, fmt.Errorf("%w: %s: field apiVersion: must be set", ErrInvalidResource, d.Where())
		}
		d.APIVersion, d.Kind, d.Raw = head.APIVersion, head.Kind, raw
		out = append(out, d)
	}
	return out, nil
}

func splitYAML(b []byte) [][]byte {
	var parts [][]byte
	start := 0
	for i := 0; i <= len(b); {
		end := bytes.IndexByte(b[i:], '\n')
		var line []byte
		next := len(b) + 1
		if end < 0 {
			line = b[i:]
		} else {
			line = b[i : i+end]
			next = i + end + 1
		}
		if t := bytes.TrimRight(line, " \t\r"); bytes.Equal(t, []byte("---")) || bytes.HasPrefix(t, []byte("--- ")) {
			parts = append(parts, b[start:i])
			start = min(next, len(b))
		}
		i = next
	}
	if start < len(b) {
		parts = append(parts, b[start:])
	}
	return parts
}

func stripComments(b []byte) []byte {
	var out []byte
	for _, line := range bytes.Split(b, []byte("\n")) {
		t := bytes.TrimSpace(line)
		if len(t) == 0 || t[0] == '#' {
			continue
		}
		out = append(out, t...)
		out = append(out, '\n')
	}
	return out
}
