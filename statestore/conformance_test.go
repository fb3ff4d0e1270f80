package statestore

import (
	"testing"

	contribmeta "github.com/dapr/components-contrib/metadata"
	"github.com/dapr/components-contrib/state"
	conformance "github.com/dapr/components-contrib/tests/conformance/state"
	"github.com/dapr/kit/logger"
)

// TestConformance runs components-contrib's state conformance suite
// against state.crux with the operations the issue names.
func TestConformance(t *testing.T) {
	c := NewComponent(logger.NewLogger("crux-conformance"), ComponentDefaults{DataDir: t.TempDir(), Logger: quiet()})
	if err := c.Init(t.Context(), state.Metadata{Base: contribmeta.Base{Name: "conformance"}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	cfg, err := conformance.NewTestConfig("crux", []string{"transaction", "etag", "first-write", "ttl", "delete-with-prefix"},
		map[string]any{"badEtag": "9999999"})
	if err != nil {
		t.Fatal(err)
	}
	conformance.ConformanceTests(t, map[string]string{}, c, cfg)
}
