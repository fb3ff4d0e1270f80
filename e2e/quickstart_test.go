package e2e

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// freePort asks the kernel for a free port on 127.0.0.1.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// The Dapr quickstarts for pub/sub and service invocation, in JavaScript
// and Go, HTTP and SDK variants, run unchanged under `mecha run -f` with
// Dapr's multi-app run template: one runtime, an order-processor and a
// checkout app, ten orders from one to the other.
func TestQuickstartsMultiAppRun(t *testing.T) {
	jsDir, _ := filepath.Abs("testdata/quickstarts/js")
	_, jsSDK := os.Stat(filepath.Join(jsDir, "node_modules", "@dapr", "dapr"))
	_, nodeErr := exec.LookPath("node")
	type lang struct {
		name, dir string
		checkout  func(variant, qs string) string
		processor func(variant, qs string) string
	}
	langs := []lang{{
		name: "go", dir: ".",
		checkout:  func(v, q string) string { return fmt.Sprintf("[%q, %q, %q]", bins.checkout, v, q) },
		processor: func(v, q string) string { return fmt.Sprintf("[%q, %q, %q]", bins.orderprocessor, v, q) },
	}, {
		name: "js", dir: jsDir,
		checkout:  func(v, q string) string { return fmt.Sprintf(`["node", "checkout.js", %q, %q]`, v, q) },
		processor: func(v, q string) string { return fmt.Sprintf(`["node", "order-processor.js", %q, %q]`, v, q) },
	}}
	for _, l := range langs {
		for _, variant := range []string{"http", "sdk"} {
			for _, qs := range []string{"pubsub", "invoke"} {
				t.Run(l.name+"/"+variant+"/"+qs, func(t *testing.T) {
					if l.name == "js" && (nodeErr != nil || variant == "sdk" && jsSDK != nil) {
						// make test installs Node.js' packages when npm is there
						// (README); without Node.js the JS quickstarts cannot run.
						t.Skipf("Node.js or @dapr/dapr is missing (node: %v, sdk: %v): run make deps", nodeErr, jsSDK)
					}
					dir := t.TempDir()
					// As the quickstarts are laid out: the template here, the
					// components in a folder beside it.
					if err := os.Mkdir(filepath.Join(dir, "components"), 0o755); err != nil {
						t.Fatal(err)
					}
					writeFile(t, filepath.Join(dir, "components"), "pubsub.yaml", "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: orderpubsub\nspec:\n  type: pubsub.mecha\n  version: v1\n")
					appDir, _ := filepath.Abs(l.dir)
					writeFile(t, dir, "dapr.yaml", fmt.Sprintf(`version: 1
common:
  resourcesPath: ./components
  env:
    ORDER_INTERVAL_MS: "50"
apps:
  - appID: order-processor
    appDirPath: %s
    appPort: %d
    command: %s
  - appID: checkout
    appDirPath: %s
    command: %s
`, appDir, freePort(t), l.processor(variant, qs), appDir, l.checkout(variant, qs)))
					p := start(t, bins.mecha, "run", "-f", dir, "--metrics-port", "0", "--broker-port", "-1", "--internal-port", "0", "--gossip-port", "0", "--data-dir", t.TempDir())
					want := "Subscriber received: "
					if qs == "invoke" {
						want = "Order received: "
					}
					re := regexp.MustCompile(regexp.QuoteMeta(want) + `\{"orderId":(\d+)\}`)
					eventually(t, 40*time.Second, func() error {
						select {
						case <-p.done:
							t.Fatalf("mecha exited:\n%s", p.output())
						default:
						}
						got := map[string]bool{}
						for _, line := range strings.Split(p.output(), "\n") {
							if m := re.FindStringSubmatch(line); m != nil {
								got[m[1]] = true
							}
						}
						if len(got) < 10 {
							return fmt.Errorf("%d of 10 orders reached the order-processor", len(got))
						}
						if qs == "invoke" && !strings.Contains(p.output(), `Order passed: {"orderId":10}`) {
							return fmt.Errorf("the checkout did not get the order-processor's last answer")
						}
						return nil
					})
				})
			}
		}
	}
}
