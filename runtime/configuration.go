package runtime

import (
	"encoding/json"
	"fmt"
	"os"

	"mecha/components"
	"mecha/runtime/accesscontrol"
)

// loadConfiguration reads a Dapr Configuration file (--config) and returns
// the enabled preview features and the service invocation access control
// (nil without an accessControl section). Other sections (tracing,
// metrics) are accepted and not acted on yet.
func loadConfiguration(path string) ([]string, *accesscontrol.List, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: --config %s: %v", ErrConfig, path, err)
	}
	docs, err := components.SplitDocuments(path, b)
	if err != nil {
		return nil, nil, fmt.Errorf("--config: %w", err)
	}
	var features []string
	var acl *accesscontrol.List
	found := false
	for _, d := range docs {
		if d.Kind != "Configuration" {
			continue
		}
		found = true
		var c struct {
			Spec struct {
				Features []struct {
					Name    string `json:"name"`
					Enabled bool   `json:"enabled"`
				} `json:"features"`
				AccessControl *accesscontrol.Spec `json:"accessControl"`
			} `json:"spec"`
		}
		if err := json.Unmarshal(d.Raw, &c); err != nil {
			return nil, nil, fmt.Errorf("%w: --config %s: spec: %v", ErrConfig, d.Where(), err)
		}
		for i, f := range c.Spec.Features {
			if f.Name == "" {
				return nil, nil, fmt.Errorf("%w: --config %s: spec.features[%d].name: must be set", ErrConfig, d.Where(), i)
			}
			if f.Enabled {
				features = append(features, f.Name)
			}
		}
		if c.Spec.AccessControl != nil {
			if acl, err = accesscontrol.Compile(*c.Spec.AccessControl); err != nil {
				return nil, nil, fmt.Errorf("%w: --config %s: %v", ErrConfig, d.Where(), err)
			}
		}
	}
	if !found {
		return nil, nil, fmt.Errorf("%w: --config %s: no document of kind Configuration", ErrConfig, path)
	}
	return features, acl, nil
}
