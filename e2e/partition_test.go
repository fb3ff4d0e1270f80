package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// netns is a network namespace joined to the test's by a veth pair:
// hostIP on this side, nsIP inside.
type netns struct {
	name, hostIP, nsIP, hostLink string
}

// newNetns makes a namespace and its link, or skips the test, saying why,
// where namespaces are not available (not root, no ip command).
func newNetns(t *testing.T, name, hostIP, nsIP string) *netns {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the partition test needs network namespaces, which need root; skipped")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("the partition test needs the ip command (iproute2); skipped")
	}
	n := &netns{name: name, hostIP: hostIP, nsIP: nsIP, hostLink: name + "-h"}
	run := func(args ...string) error {
		out, err := exec.Command("ip", args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
		return nil
	}
	_ = run("netns", "del", name)
	_ = run("link", "del", n.hostLink)
	if err := run("netns", "add", name); err != nil {
		t.Skipf("network namespaces are not available here (%v); skipped", err)
	}
	t.Cleanup(func() {
		_ = run("link", "del", n.hostLink)
		_ = run("netns", "del", name)
	})
	for _, args := range [][]string{
		{"link", "add", n.hostLink, "type", "veth", "peer", "name", name + "-n"},
		{"link", "set", name + "-n", "netns", name},
		{"addr", "add", hostIP + "/24", "dev", n.hostLink},
		{"link", "set", n.hostLink, "up"},
		{"netns", "exec", name, "ip", "addr", "add", nsIP + "/24", "dev", name + "-n"},
		{"netns", "exec", name, "ip", "link", "set", name + "-n", "up"},
		{"netns", "exec", name, "ip", "link", "set", "lo", "up"},
	} {
		if err := run(args...); err != nil {
			t.Skipf("could not set up the namespace's link (%v); skipped", err)
		}
	}
	return n
}

// cut and heal take the link between the namespaces down and up.
func (n *netns) cut(t *testing.T) {
	t.Helper()
	if out, err := exec.Command("ip", "link", "set", n.hostLink, "down").CombinedOutput(); err != nil {
		t.Fatalf("cutting the link: %v: %s", err, out)
	}
}

func (n *netns) heal(t *testing.T) {
	t.Helper()
	if out, err := exec.Command("ip", "link", "set", n.hostLink, "up").CombinedOutput(); err != nil {
		t.Fatalf("healing the link: %v: %s", err, out)
	}
}

// TestPartitionBetweenDCs runs dc-b in its own network namespace, linked
// to dc-a's by a veth pair. A caller in dc-a reaches dc-b's app through
// the gateways; when the link is cut, its calls fail fast with Dapr's
// error once dc-b's view expires (instead of hanging), its own DC keeps
// working, and when the link is back, calls reach dc-b again. Calls made
// before the view expires are bounded by a Resiliency timeout.
func TestPartitionBetweenDCs(t *testing.T) {
	// Beyond loopback, cluster traffic must be authenticated.
	const partitionKey = "cGFydGl0aW9uLWtleS0xNg=="
	ns := newNetns(t, "mecha-dcb", "10.231.0.1", "10.231.0.2")
	inNS := func(args ...string) (string, []string) {
		return "ip", append([]string{"netns", "exec", ns.name}, args...)
	}
	// dc-b, inside the namespace: a gateway hosting the app.
	name, args := inNS(bins.httpapp)
	app := start(t, name, args...)
	appPort, _ := strconv.Atoi(app.waitLine(listeningRE, 10*time.Second)[1])
	name, args = inNS(bins.mecha, "run", "--app-id", "far", "--app-port", fmt.Sprint(appPort), "--dc", "dc-b", "--gateway",
		"--dapr-http-port", "0", "--dapr-grpc-port", "0", "--metrics-port", "0", "--broker-port", "-1", "--internal-port", "0",
		"--gossip-port", "0", "--wan-port", "0", "--gossip-bind-address", ns.nsIP, "--gossip-key", partitionKey, "--data-dir", t.TempDir())
	b := start(t, name, args...)
	bWAN := wanRE.FindStringSubmatch(b.waitLine(wanRE, 20*time.Second)[0])[1]

	// dc-a, here: a gateway with an app of its own, and the caller.
	// Calls across a cut link would wait for TCP to give up; a Resiliency
	// timeout bounds them, as an operator would.
	res := t.TempDir()
	writeFile(t, res, "state.yaml", "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: statestore\nspec:\n  type: state.in-memory\n  version: v1\n")
	writeFile(t, res, "resiliency.yaml", "apiVersion: dapr.io/v1alpha1\nkind: Resiliency\nmetadata:\n  name: r\nspec:\n  policies:\n    timeouts:\n      short: 1s\n  targets:\n    apps:\n      far:\n        timeout: short\n")
	nearPort := startHTTPApp(t)
	a := startMecha(t, "--app-id", "near", "--app-port", fmt.Sprint(nearPort), "--dc", "dc-a", "--gateway", "--wan-port", "0",
		"--gossip-bind-address", ns.hostIP, "--gossip-key", partitionKey, "--wan-join", ns.nsIP+":"+bWAN, "--resources-path", res)
	eventually(t, 15*time.Second, func() error {
		if r := do(t, "GET", a.url("/v1.0/invoke/far/method/echo/x"), nil); r.Status != 200 {
			return fmt.Errorf("dc-a → dc-b: %d %s", r.Status, r.Body)
		}
		return nil
	})

	ns.cut(t)
	cut := time.Now()
	// dc-b's view expires: calls fail fast with ERR_DIRECT_INVOKE.
	eventually(t, 20*time.Second, func() error {
		start := time.Now()
		r := do(t, "GET", a.url("/v1.0/invoke/far/method/echo/x"), nil)
		if r.Status != 500 || !strings.Contains(string(r.Body), "couldn't find service") {
			return fmt.Errorf("during the partition: %d %s", r.Status, r.Body)
		}
		if d := time.Since(start); d > 2*time.Second {
			return fmt.Errorf("a call took %v to fail", d)
		}
		return nil
	})
	t.Logf("dc-b left dc-a's catalog %v after the cut", time.Since(cut).Round(time.Millisecond))
	// dc-a's own app is unaffected.
	expectStatus(t, do(t, "GET", a.url("/v1.0/invoke/near/method/echo/x"), nil), 200)

	ns.heal(t)
	healed := time.Now()
	eventually(t, 60*time.Second, func() error {
		if r := do(t, "GET", a.url("/v1.0/invoke/far/method/echo/x"), nil); r.Status != 200 {
			return fmt.Errorf("after healing: %d %s", r.Status, r.Body)
		}
		return nil
	})
	t.Logf("dc-b was back %v after the link", time.Since(healed).Round(time.Millisecond))
}
