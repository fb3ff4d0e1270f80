package runtime

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestApplyRunFile(t *testing.T) {
	dir := t.TempDir()
	for _, d := range []string{"a", "b", "components"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write := func(body string) string {
		p := filepath.Join(dir, "dapr.yaml")
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write(`version: 1
common:
  resourcesPath: ./components
  env: {SHARED: "1", OVER: common}
  logLevel: debug
  appLogDestination: console
apps:
  - appID: a
    appDirPath: ./a
    appPort: 6001
    command: ["node", "app.js"]
    env: {OVER: app}
  - appID: b
    appDirPath: ./b
    appProtocol: grpc
    daprHTTPPort: 3600
    command: ["./b"]
    containerImage: ignored
`)
	cfg := DefaultConfig()
	ignored, err := ApplyRunFile(dir, &cfg) // a folder holding dapr.yaml
	if err != nil {
		t.Fatal(err)
	}
	if cfg.AppID != "a" || cfg.AppPort != 6001 || cfg.HTTPPort != 0 || cfg.GRPCPort != 0 || !slices.Equal(cfg.Command, []string{"node", "app.js"}) ||
		cfg.CommandDir != filepath.Join(dir, "a") || !slices.Equal(cfg.CommandEnv, []string{"OVER=app", "SHARED=1"}) {
		t.Errorf("first app: %+v", cfg)
	}
	if len(cfg.Apps) != 1 || cfg.Apps[0].ID != "b" || cfg.Apps[0].Protocol != "grpc" || cfg.Apps[0].HTTPPort != 3600 || cfg.Apps[0].Dir != filepath.Join(dir, "b") {
		t.Errorf("second app: %+v", cfg.Apps)
	}
	if !slices.Equal(cfg.ResourcesPaths, []string{filepath.Join(dir, "components")}) || cfg.LogLevel != "debug" {
		t.Errorf("resources %v, log level %s", cfg.ResourcesPaths, cfg.LogLevel)
	}
	if !slices.Equal(ignored, []string{"apps[1].containerImage", "common.appLogDestination"}) {
		t.Errorf("ignored fields %v", ignored)
	}

	for _, tc := range []struct{ name, body, want string }{
		{"no apps", "version: 1\napps: []\n", "names no app"},
		{"no appID", "apps:\n  - appDirPath: ./a\n", "apps[0]: appID must be set"},
		{"twice", "apps:\n  - {appID: x, appDirPath: ./a}\n  - {appID: x, appDirPath: ./b}\n", `apps[1]: appID "x" is used twice`},
		{"no folder", "apps:\n  - {appID: x, appDirPath: ./nope}\n", "appDirPath " + filepath.Join(dir, "nope") + " is not a folder"},
		{"protocol", "apps:\n  - {appID: x, appDirPath: ./a, appProtocol: tcp}\n", `appProtocol "tcp" is not http or grpc`},
		{"not YAML", "apps: [", "-f "},
		{"wrong type", "apps:\n  - {appID: x, appPort: many}\n", "appPort"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			_, err := ApplyRunFile(write(tc.body), &cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ApplyRunFile = %v, want an error with %q", err, tc.want)
			}
		})
	}
}
