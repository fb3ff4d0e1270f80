package runtime

import (
	"encoding/json"
	"fmt"
	"os"

	"mecha/components"
)

// loadConfiguration reads a Dapr Configuration file (--config) and returns
// the enabled preview features. Other sections are accepted and not yet
// acted on; tracing, metrics and access control arrive with their issues.
func loadConfiguration(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: --config %s: %v", ErrConfig, path, err)
	}
	docs, err := components.SplitDocuments(path, b)
	if err != nil {
		return nil, fmt.Errorf("--config: %w", err)
	}
	var features []string
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
			} `json:"spec"`
		}
		if err := json.Unmarshal(d.Raw, &c); err != nil {
			return nil, fmt.Errorf("%w: --config %s: spec: %v", ErrConfig, d.Where(), err)
		}
		for i, f := range c.Spec.Features {
			if f.Name == "" {
				return nil, fmt.Errorf("%w: --config %s: spec.features[%d].name: must be set", ErrConfig, d.Where(), i)
			}
			if f.Enabled {
				features = append(features, f.Name)
			}
		}
	}
	if !found {
		return nil, fmt.Errorf("%w: --config %s: no document of kind Configuration", ErrConfig, path)
	}
	return features, nil
}
