package components

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestSplitDocuments(t *testing.T) {
	const path = "/res/file.yaml"
	type doc struct {
		index      int
		apiVersion string
		kind       string
	}
	cases := []struct {
		name    string
		in      string
		want    []doc
		wantErr []string // substrings of the error; nil means success
	}{
		{
			name: "single document",
			in:   "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: a\n",
			want: []doc{{0, "dapr.io/v1alpha1", "Component"}},
		},
		{
			name: "empty file",
			in:   "",
		},
		{
			name: "only comments and separators",
			in:   "# nothing here\n---\n   # still nothing\n---\n",
		},
		{
			name: "multi-document with leading separator",
			in:   "---\napiVersion: dapr.io/v1alpha1\nkind: Component\n---\napiVersion: dapr.io/v2alpha1\nkind: Subscription\n",
			want: []doc{{0, "dapr.io/v1alpha1", "Component"}, {1, "dapr.io/v2alpha1", "Subscription"}},
		},
		{
			name: "comments-only document is skipped and does not take a number",
			in:   "apiVersion: a/v1\nkind: A\n---\n# a comment\n\n# another\n---\napiVersion: b/v1\nkind: B\n",
			want: []doc{{0, "a/v1", "A"}, {1, "b/v1", "B"}},
		},
		{
			name: "separator with trailing comment and CRLF line endings",
			in:   "apiVersion: a/v1\r\nkind: A\r\n--- # next\r\napiVersion: b/v1\r\nkind: B\r\n",
			want: []doc{{0, "a/v1", "A"}, {1, "b/v1", "B"}},
		},
		{
			name: "indented dashes are content, not a separator",
			in:   "apiVersion: a/v1\nkind: A\nnote: |\n  ---\n  text\n",
			want: []doc{{0, "a/v1", "A"}},
		},
		{
			name:    "missing kind in the second document",
			in:      "apiVersion: a/v1\nkind: A\n---\napiVersion: b/v1\n",
			wantErr: []string{path, "(document 2)", "field kind: must be set"},
		},
		{
			name:    "missing apiVersion in the third document",
			in:      "apiVersion: a/v1\nkind: A\n---\napiVersion: b/v1\nkind: B\n---\nkind: C\n",
			wantErr: []string{path, "(document 3)", "field apiVersion: must be set"},
		},
		{
			name:    "missing kind in a single-document file",
			in:      "apiVersion: a/v1\nmetadata: {name: x}\n",
			wantErr: []string{path, "field kind: must be set"},
		},
		{
			name:    "invalid YAML",
			in:      "apiVersion: a/v1\nkind: [A\n",
			wantErr: []string{path, "not valid YAML"},
		},
		{
			name:    "invalid YAML in the second document",
			in:      "apiVersion: a/v1\nkind: A\n---\nkind: B\n  bad: indent\n",
			wantErr: []string{path, "(document 2)", "not valid YAML"},
		},
		{
			name:    "scalar document",
			in:      "just a string\n",
			wantErr: []string{path, "expected a mapping with apiVersion and kind"},
		},
		{
			name:    "kind of the wrong type",
			in:      "apiVersion: a/v1\nkind: 5\n",
			wantErr: []string{path, "expected a mapping with apiVersion and kind", "kind"},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			docs, err := SplitDocuments(path, []byte(c.in))
			if c.wantErr != nil {
				if err == nil {
					t.Fatalf("got %d documents and no error, want an error containing %q", len(docs), c.wantErr)
				}
				if !errors.Is(err, ErrInvalidResource) {
					t.Errorf("error %v does not wrap ErrInvalidResource", err)
				}
				for _, s := range c.wantErr {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("error %q does not contain %q", err, s)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if len(docs) != len(c.want) {
				t.Fatalf("got %d documents, want %d: %+v", len(docs), len(c.want), docs)
			}
			for i, w := range c.want {
				d := docs[i]
				if d.File != path || d.Index != w.index || d.APIVersion != w.apiVersion || d.Kind != w.kind {
					t.Errorf("document %d = {File:%q Index:%d APIVersion:%q Kind:%q}, want {%q %d %q %q}",
						i, d.File, d.Index, d.APIVersion, d.Kind, path, w.index, w.apiVersion, w.kind)
				}
				var m map[string]any
				if err := json.Unmarshal(d.Raw, &m); err != nil {
					t.Errorf("document %d Raw is not a JSON object: %v: %s", i, err, d.Raw)
				}
				if m["kind"] != w.kind {
					t.Errorf("document %d Raw kind = %v, want %q", i, m["kind"], w.kind)
				}
			}
		})
	}
}

func TestDocumentWhere(t *testing.T) {
	if got := (Document{File: "a.yaml"}).Where(); got != "a.yaml" {
		t.Errorf("Where() of the first document = %q, want %q", got, "a.yaml")
	}
	if got := (Document{File: "a.yaml", Index: 2}).Where(); got != "a.yaml (document 3)" {
		t.Errorf("Where() of the third document = %q, want %q", got, "a.yaml (document 3)")
	}
}

// decodeYAML runs a YAML component through SplitDocuments and
// DecodeComponent, as the manager does.
func decodeYAML(t *testing.T, path, in string) (*Component, error) {
	t.Helper()
	docs, err := SplitDocuments(path, []byte(in))
	if err != nil {
		t.Fatalf("SplitDocuments: %v", err)
	}
	if len(docs) != 1 {
		t.Fatalf("got %d documents, want 1", len(docs))
	}
	return DecodeComponent(docs[0])
}

func TestDecodeComponent(t *testing.T) {
	const path = "/res/comp.yaml"
	const head = "apiVersion: dapr.io/v1alpha1\nkind: Component\n"
	cases := []struct {
		name    string
		in      string
		wantErr []string
		check   func(t *testing.T, c *Component)
	}{
		{
			name: "valid component",
			in: head + `metadata:
  name: statestore
  namespace: prod
spec:
  type: state.redis
  version: v2
  ignoreErrors: true
  initTimeout: 750ms
  metadata:
  - name: redisHost
    value: localhost:6379
  - name: redisPassword
    secretKeyRef:
      name: redis
      key: password
  - name: fromEnv
    envRef: REDIS_USER
auth:
  secretStore: vault
scopes: [app1, app2]
`,
			check: func(t *testing.T, c *Component) {
				if c.Metadata.Name != "statestore" || c.Metadata.Namespace != "prod" {
					t.Errorf("metadata = %+v", c.Metadata)
				}
				if c.APIVersion != "dapr.io/v1alpha1" || c.Kind != "Component" {
					t.Errorf("apiVersion/kind = %q/%q", c.APIVersion, c.Kind)
				}
				if c.File != path {
					t.Errorf("File = %q, want %q", c.File, path)
				}
				if c.TypeVersion() != "state.redis@v2" || c.Category() != CategoryState {
					t.Errorf("TypeVersion = %q, Category = %q", c.TypeVersion(), c.Category())
				}
				if !c.Spec.IgnoreErrors {
					t.Error("ignoreErrors not decoded")
				}
				if d := c.InitTimeoutDuration(); d != 750*time.Millisecond {
					t.Errorf("InitTimeoutDuration = %v, want 750ms", d)
				}
				if c.Auth.SecretStore != "vault" {
					t.Errorf("auth.secretStore = %q", c.Auth.SecretStore)
				}
				if !reflect.DeepEqual(c.Scopes, []string{"app1", "app2"}) {
					t.Errorf("scopes = %v", c.Scopes)
				}
				want := []MetadataItem{
					{Name: "redisHost", Value: DynamicValue{S: "localhost:6379", Set: true}},
					{Name: "redisPassword", SecretKeyRef: &SecretKeyRef{Name: "redis", Key: "password"}},
					{Name: "fromEnv", EnvRef: "REDIS_USER"},
				}
				if !reflect.DeepEqual(c.Spec.Metadata, want) {
					t.Errorf("spec.metadata = %+v, want %+v", c.Spec.Metadata, want)
				}
			},
		},
		{
			name: "defaults: version v1 and initTimeout 5s",
			in:   head + "metadata: {name: s}\nspec: {type: pubsub.in-memory}\n",
			check: func(t *testing.T, c *Component) {
				if c.TypeVersion() != "pubsub.in-memory@v1" {
					t.Errorf("TypeVersion = %q, want pubsub.in-memory@v1", c.TypeVersion())
				}
				if c.Category() != CategoryPubSub {
					t.Errorf("Category = %q", c.Category())
				}
				if d := c.InitTimeoutDuration(); d != 5*time.Second {
					t.Errorf("InitTimeoutDuration = %v, want 5s", d)
				}
			},
		},
		{
			name: "category is the part before the first dot",
			in:   head + "metadata: {name: s}\nspec: {type: secretstores.local.env}\n",
			check: func(t *testing.T, c *Component) {
				if c.Category() != CategorySecrets {
					t.Errorf("Category = %q, want %q", c.Category(), CategorySecrets)
				}
			},
		},
		{
			name: "metadata values of every scalar type become strings",
			in: head + `metadata: {name: s}
spec:
  type: state.x
  metadata:
  - {name: int, value: 5}
  - {name: float, value: 1.5}
  - {name: bool, value: true}
  - {name: str, value: hello}
  - {name: quoted, value: "5"}
  - {name: empty, value: ""}
  - {name: nil, value: null}
  - {name: object, value: {a: 1}}
`,
			check: func(t *testing.T, c *Component) {
				want := map[string]DynamicValue{
					"int":    {S: "5", Set: true},
					"float":  {S: "1.5", Set: true},
					"bool":   {S: "true", Set: true},
					"str":    {S: "hello", Set: true},
					"quoted": {S: "5", Set: true},
					"empty":  {S: "", Set: true},
					"nil":    {},
					"object": {S: `{"a":1}`, Set: true},
				}
				if len(c.Spec.Metadata) != len(want) {
					t.Fatalf("got %d metadata items, want %d", len(c.Spec.Metadata), len(want))
				}
				for _, m := range c.Spec.Metadata {
					if w := want[m.Name]; m.Value != w {
						t.Errorf("value of %s = %+v, want %+v", m.Name, m.Value, w)
					}
				}
			},
		},
		{
			name:    "unknown top-level field",
			in:      head + "metadata: {name: s}\nspec: {type: state.x}\nextra: 1\n",
			wantErr: []string{path, `unknown field "extra"`},
		},
		{
			name:    "unknown field in spec",
			in:      head + "metadata: {name: s}\nspec: {type: state.x, typo: 1}\n",
			wantErr: []string{path, `unknown field "typo"`},
		},
		{
			name:    "unknown field in a metadata item",
			in:      head + "metadata: {name: s}\nspec: {type: state.x, metadata: [{name: a, vaule: b}]}\n",
			wantErr: []string{path, `unknown field "vaule"`},
		},
		{
			name:    "wrong type for spec.type",
			in:      head + "metadata: {name: s}\nspec: {type: 5}\n",
			wantErr: []string{path, "spec.type", "expected string", "number"},
		},
		{
			name:    "wrong type for spec",
			in:      head + "metadata: {name: s}\nspec: [1]\n",
			wantErr: []string{path, "spec", "array"},
		},
		{
			name:    "missing metadata.name",
			in:      head + "spec: {type: state.x}\n",
			wantErr: []string{path, "metadata.name: must be set"},
		},
		{
			name:    "metadata.name with the key separator",
			in:      head + "metadata: {name: 'a||b'}\nspec: {type: state.x}\n",
			wantErr: []string{path, "metadata.name", "'||'"},
		},
		{
			name:    "missing spec.type",
			in:      head + "metadata: {name: s}\nspec: {version: v1}\n",
			wantErr: []string{path, `component "s"`, "spec.type: must be set"},
		},
		{
			name:    "spec.type without a dot",
			in:      head + "metadata: {name: s}\nspec: {type: redis}\n",
			wantErr: []string{path, "spec.type", `"redis"`, "<building block>.<name>"},
		},
		{
			name:    "initTimeout not a duration",
			in:      head + "metadata: {name: s}\nspec: {type: state.x, initTimeout: soon}\n",
			wantErr: []string{path, "spec.initTimeout", `"soon"`},
		},
		{
			name:    "initTimeout not positive",
			in:      head + "metadata: {name: s}\nspec: {type: state.x, initTimeout: -1s}\n",
			wantErr: []string{path, "spec.initTimeout", "positive"},
		},
		{
			name:    "metadata item with value and secretKeyRef",
			in:      head + "metadata: {name: s}\nspec: {type: state.x, metadata: [{name: pw, value: x, secretKeyRef: {name: s}}]}\n",
			wantErr: []string{path, "spec.metadata[0] (pw)", "set only one of value, secretKeyRef and envRef"},
		},
		{
			name:    "metadata item with value and envRef",
			in:      head + "metadata: {name: s}\nspec: {type: state.x, metadata: [{name: a, value: x}, {name: b, value: 1, envRef: B}]}\n",
			wantErr: []string{path, "spec.metadata[1] (b)", "set only one"},
		},
		{
			name:    "metadata item without a name",
			in:      head + "metadata: {name: s}\nspec: {type: state.x, metadata: [{value: x}]}\n",
			wantErr: []string{path, "spec.metadata[0].name: must be set"},
		},
		{
			name:    "secretKeyRef without a name",
			in:      head + "metadata: {name: s}\nspec: {type: state.x, metadata: [{name: a, secretKeyRef: {key: k}}]}\n",
			wantErr: []string{path, "spec.metadata[0].secretKeyRef.name: must be set"},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			comp, err := decodeYAML(t, path, c.in)
			if c.wantErr != nil {
				if err == nil {
					t.Fatalf("got %+v and no error, want an error containing %q", comp, c.wantErr)
				}
				if !errors.Is(err, ErrInvalidResource) {
					t.Errorf("error %v does not wrap ErrInvalidResource", err)
				}
				for _, s := range c.wantErr {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("error %q does not contain %q", err, s)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			c.check(t, comp)
		})
	}
}

func TestDecodeComponentNamesDocumentNumber(t *testing.T) {
	in := "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: a}\nspec: {type: state.x}\n" +
		"---\napiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: b}\nspec: {type: nodot}\n"
	docs, err := SplitDocuments("multi.yaml", []byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := DecodeComponent(docs[0]); err != nil {
		t.Fatalf("first document: %v", err)
	}
	_, err = DecodeComponent(docs[1])
	if err == nil || !strings.Contains(err.Error(), "multi.yaml (document 2)") {
		t.Fatalf("error = %v, want it to name multi.yaml (document 2)", err)
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestReadDocuments(t *testing.T) {
	doc := func(kind string) string { return "apiVersion: x/v1\nkind: " + kind + "\n" }
	dir1, dir2 := t.TempDir(), t.TempDir()
	writeFile(t, filepath.Join(dir1, "b.yaml"), doc("B")+"---\n"+doc("B2"))
	writeFile(t, filepath.Join(dir1, "a.yml"), doc("A"))
	writeFile(t, filepath.Join(dir1, "c.YAML"), doc("C"))
	writeFile(t, filepath.Join(dir1, "notes.txt"), doc("Ignored"))
	writeFile(t, filepath.Join(dir1, "comp.json"), `{"apiVersion":"x/v1","kind":"Ignored"}`)
	writeFile(t, filepath.Join(dir1, "sub", "deep.yaml"), doc("Ignored"))
	writeFile(t, filepath.Join(dir1, "dir.yaml", "inner.yaml"), doc("Ignored"))
	writeFile(t, filepath.Join(dir2, "z.yaml"), doc("Z"))

	docs, err := ReadDocuments([]string{dir1, dir2})
	if err != nil {
		t.Fatal(err)
	}
	type got struct {
		file, kind string
		index      int
	}
	var have []got
	for _, d := range docs {
		have = append(have, got{d.File, d.Kind, d.Index})
	}
	want := []got{
		{filepath.Join(dir1, "a.yml"), "A", 0},
		{filepath.Join(dir1, "b.yaml"), "B", 0},
		{filepath.Join(dir1, "b.yaml"), "B2", 1},
		{filepath.Join(dir1, "c.YAML"), "C", 0},
		{filepath.Join(dir2, "z.yaml"), "Z", 0},
	}
	if !reflect.DeepEqual(have, want) {
		t.Errorf("documents =\n%v\nwant\n%v", have, want)
	}
}

func TestReadDocumentsErrors(t *testing.T) {
	t.Run("missing folder", func(t *testing.T) {
		missing := filepath.Join(t.TempDir(), "nope")
		_, err := ReadDocuments([]string{missing})
		if err == nil || !errors.Is(err, ErrInvalidResource) || !strings.Contains(err.Error(), missing) {
			t.Fatalf("error = %v, want ErrInvalidResource naming %s", err, missing)
		}
	})
	t.Run("invalid file", func(t *testing.T) {
		dir := t.TempDir()
		writeFile(t, filepath.Join(dir, "a.yaml"), "apiVersion: x/v1\nkind: A\n")
		bad := filepath.Join(dir, "b.yaml")
		writeFile(t, bad, "apiVersion: x/v1\n")
		_, err := ReadDocuments([]string{dir})
		if err == nil || !errors.Is(err, ErrInvalidResource) || !strings.Contains(err.Error(), bad) {
			t.Fatalf("error = %v, want ErrInvalidResource naming %s", err, bad)
		}
	})
	t.Run("empty folder", func(t *testing.T) {
		docs, err := ReadDocuments([]string{t.TempDir()})
		if err != nil || len(docs) != 0 {
			t.Fatalf("got %v, %v; want no documents and no error", docs, err)
		}
	})
}

func addManifestSeeds(f *testing.F) {
	f.Add([]byte("apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: s\nspec:\n  type: state.in-memory\n  metadata:\n  - name: a\n    value: 1\n"))
	f.Add([]byte("---\napiVersion: a/v1\nkind: A\n--- # c\n# only comments\n---\r\napiVersion: b/v1\r\nkind: B\r\n"))
	f.Add([]byte("apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: s}\nspec: {type: state.x, initTimeout: 1s, metadata: [{name: a, secretKeyRef: {name: s, key: k}}, {name: b, envRef: B}]}\nauth: {secretStore: x}\nscopes: [a]\n"))
	f.Add([]byte("apiVersion: a/v1\nkind: [A\n"))
	f.Add([]byte("a: &a [1, *a]\n"))
	f.Add([]byte("---"))
	f.Add([]byte{})
}

// FuzzSplitDocuments checks that any input either splits into documents
// that all carry a kind, an apiVersion and JSON, numbered from 0, or fails
// with ErrInvalidResource; it must never panic.
func FuzzSplitDocuments(f *testing.F) {
	addManifestSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		docs, err := SplitDocuments("f.yaml", b)
		if err != nil {
			if !errors.Is(err, ErrInvalidResource) {
				t.Fatalf("error %v does not wrap ErrInvalidResource", err)
			}
			if !strings.Contains(err.Error(), "f.yaml") {
				t.Fatalf("error %q does not name the file", err)
			}
			return
		}
		for i, d := range docs {
			if d.Index != i || d.File != "f.yaml" {
				t.Fatalf("document %d has Index %d File %q", i, d.Index, d.File)
			}
			if d.Kind == "" || d.APIVersion == "" {
				t.Fatalf("document %d accepted without kind/apiVersion: %+v", i, d)
			}
			if !json.Valid(d.Raw) {
				t.Fatalf("document %d Raw is not JSON: %q", i, d.Raw)
			}
		}
	})
}

// FuzzDecodeComponent decodes arbitrary bytes, both as a YAML file and as
// the raw JSON of a document: it must never panic, and a component it
// accepts must be valid.
func FuzzDecodeComponent(f *testing.F) {
	addManifestSeeds(f)
	f.Add([]byte(`{"metadata":{"name":"s"},"spec":{"type":"state.x","metadata":[{"name":"a","value":{"x":[1]}}]}}`))
	f.Add([]byte(`{"metadata":{"name":"s"},"spec":{"type":5}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		check := func(d Document) {
			c, err := DecodeComponent(d)
			if err != nil {
				if !errors.Is(err, ErrInvalidResource) {
					t.Fatalf("error %v does not wrap ErrInvalidResource", err)
				}
				return
			}
			if err := c.validate(); err != nil {
				t.Fatalf("accepted component does not validate: %v: %+v", err, c)
			}
			if c.File != d.File {
				t.Fatalf("File = %q, want %q", c.File, d.File)
			}
			if c.Category() == "" || !strings.Contains(c.TypeVersion(), "@") || c.InitTimeoutDuration() <= 0 {
				t.Fatalf("accepted component has bad derived fields: %+v", c)
			}
		}
		check(Document{File: "raw.json", Raw: b})
		docs, err := SplitDocuments("f.yaml", b)
		if err != nil {
			return
		}
		for _, d := range docs {
			check(d)
		}
	})
}
