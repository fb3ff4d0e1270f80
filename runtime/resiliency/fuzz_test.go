package resiliency

import (
	"encoding/json"
	"errors"
	"testing"

	"sigs.k8s.io/yaml"
)

// FuzzDecode feeds arbitrary bytes to the decoder: it must not panic,
// every error must be a *FieldError, and a decoded document must encode
// back to JSON that decodes to the same document and builds Policies
// (or fails with a FieldError, for references to unknown policies).
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		fullDoc,
		head("  policies:\n    retries:\n      fast: {maxRetries: -3}\n"),
		head("  policies:\n    circuitBreakers:\n      cb: {trip: \"requests > 3 && totalFailures * 2 > requests\"}\n"),
		head("  policies:\n    timeouts: {t: 1500}\n  targets:\n    apps:\n      a: {timeout: t}\n"),
	} {
		raw, err := yaml.YAMLToJSON([]byte(s))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(raw)
	}
	f.Add([]byte(`{"apiVersion":"dapr.io/v1alpha1","kind":"Resiliency","metadata":{"name":"x"},"spec":{"policies":{"timeouts":{"a":"1h"}}}}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		d, err := Decode(raw)
		if err != nil {
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("error %T %v is not a *FieldError", err, err)
			}
			return
		}
		again, err := json.Marshal(d)
		if err != nil {
			t.Fatalf("Marshal: %v", err)
		}
		d2, err := Decode(again)
		if err != nil {
			t.Fatalf("re-decoding %s: %v", again, err)
		}
		third, _ := json.Marshal(d2)
		if string(third) != string(again) {
			t.Fatalf("round trip changed the document:\n%s\n%s", again, third)
		}
		if _, err := New(Options{}, d); err != nil {
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("New error %T %v is not a *FieldError", err, err)
			}
		}
	})
}
