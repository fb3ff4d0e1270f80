package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/coder/websocket"
)

// chromium is the browser binary: $MECHA_CHROMIUM, or Debian's (the
// /usr/bin/chromium wrapper script is skipped: it can fail on small
// VMs). make test installs it.
func chromium(t *testing.T) string {
	t.Helper()
	for _, p := range []string{os.Getenv("MECHA_CHROMIUM"), "/usr/lib/chromium/chromium", "/usr/lib/chromium-browser/chromium-browser"} {
		if p == "" {
			continue
		}
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("chromium"); err == nil {
		return p
	}
	t.Fatal("no chromium: make test installs it (apt-get install chromium), or set MECHA_CHROMIUM")
	return ""
}

// tab is one browser page of the IM example's chat client.
type tab struct {
	t   *testing.T
	ctx context.Context
}

func (b *tab) run(actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.t.Fatal(err)
	}
}

// evalJS evaluates js in the page.
func evalJS[T any](b *tab, js string) (T, error) {
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	return chromedp.Run(ctx, chromedp.Evaluate[T](js))
}

// instance is the gateway instance the page is connected to ("" while
// it is not).
func (b *tab) instance() string {
	s, _ := evalJS[string](b, `document.getElementById("status").textContent.startsWith("connected") ? document.body.dataset.instance : ""`)
	return s
}

func (b *tab) list(id string) []string {
	out, _ := evalJS[[]string](b, fmt.Sprintf(`Array.from(document.querySelectorAll("#%s li")).map(li => li.textContent)`, id))
	return out
}

func (b *tab) send(to, text string) {
	b.t.Helper()
	b.run(chromedp.SetValue(chromedp.ID("to"), to), chromedp.SetValue(chromedp.ID("text"), text), chromedp.Click(chromedp.ID("send")))
}

// waitFor polls the list id of the page until it holds want.
func (b *tab) waitFor(id, want string) {
	b.t.Helper()
	eventually(b.t, 20*time.Second, func() error {
		if l := b.list(id); !slices.Contains(l, want) {
			return fmt.Errorf("#%s is %q, without %q", id, l, want)
		}
		return nil
	})
}

// TestIMBrowser runs the IM example (examples/im) on two runtimes, one
// the Crux server and one a Crux client, each with a gateway, and drives
// its chat page in headless Chromium: two users on different gateways
// exchange messages, bad input is refused, a group message fans out
// through pub/sub, an offline user gets the inbox at the next login, and
// after kill -9 of one gateway's runtime its page reconnects to the other
// gateway, the session moves there, and every message acknowledged to
// the sender arrives.
func TestIMBrowser(t *testing.T) {
	exe := chromium(t)
	webA, webB, appA, appB := freePort(t), freePort(t), freePort(t), freePort(t)
	peers := fmt.Sprintf("http://127.0.0.1:%d,http://127.0.0.1:%d", webA, webB)
	env := func(web int) []string { return []string{fmt.Sprint("WEB_PORT=", web), "IM_WEB_PEERS=" + peers} }
	a := startMechaEnv(t, env(webA), "--app-id", "gateway", "--app-port", fmt.Sprint(appA), "--bootstrap-expect", "1", "--", bins.imgateway)
	a.waitHealthy(t)
	b := startMechaEnv(t, env(webB), "--app-id", "gateway", "--app-port", fmt.Sprint(appB), "--crux-client",
		"--join", fmt.Sprintf("127.0.0.1:%d", a.gossipPort), "--", bins.imgateway)
	b.waitHealthy(t)
	aInst, bInst := instanceID(t, a), instanceID(t, b)
	// Both gateways serve, and B reaches the Crux cluster.
	eventually(t, 20*time.Second, func() error {
		for _, p := range []int{webA, webB} {
			if r := do(t, "GET", fmt.Sprintf("http://127.0.0.1:%d/config", p), nil); r.Status != 200 {
				return fmt.Errorf("gateway on %d: %d", p, r.Status)
			}
		}
		if r := do(t, "GET", b.url("/v1.0/state/statestore/probe"), nil); r.Status != 204 {
			return fmt.Errorf("state through B: %d %s", r.Status, r.Body)
		}
		return nil
	})

	imBadInput(t, webA)

	alloc, cancel := chromedp.NewExecAllocator(context.Background(), append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe), chromedp.NoSandbox, chromedp.Headless, chromedp.DisableGPU)...)
	defer cancel()
	browser, cancelBrowser := chromedp.NewContext(alloc)
	defer cancelBrowser()
	if err := chromedp.Do(browser); err != nil {
		t.Fatalf("starting %s: %v", exe, err)
	}
	newTab := func() *tab {
		ctx, cancel := chromedp.NewContext(browser)
		t.Cleanup(cancel)
		// The tab lives as long as the context of its first run: one
		// without a timeout.
		if err := chromedp.Do(ctx); err != nil {
			t.Fatal(err)
		}
		return &tab{t: t, ctx: ctx}
	}
	page := func(web int, user string) string {
		return fmt.Sprintf("http://127.0.0.1:%d/?user=%s&ping=1000", web, user)
	}
	connected := func(b *tab, inst string) {
		t.Helper()
		eventually(t, 20*time.Second, func() error {
			if got := b.instance(); got != inst {
				st, err := evalJS[string](b, `document.getElementById("status").textContent + " " + document.getElementById("errors").textContent`)
				return fmt.Errorf("connected to %q, want %q (page: %q %v)", got, inst, st, err)
			}
			return nil
		})
	}
	alice, bob := newTab(), newTab()
	alice.run(chromedp.Navigate(page(webA, "alice")))
	bob.run(chromedp.Navigate(page(webB, "bob")))
	connected(alice, aInst)
	connected(bob, bInst)

	// Across gateways, both ways.
	alice.send("bob", "hello bob")
	bob.waitFor("log", "alice: hello bob")
	bob.send("alice", "hi alice")
	alice.waitFor("log", "bob: hi alice")

	// Bad input is refused with a clear error.
	alice.send("nobody", "anyone?")
	alice.waitFor("errors", `unknown user "nobody"`)
	alice.send("bob", strings.Repeat("x", 5000))
	alice.waitFor("errors", "message of 5000 bytes, more than 4096")

	// A group message fans out through pub/sub.
	for _, u := range []*tab{alice, bob} {
		u.run(chromedp.SetValue(chromedp.ID("group"), "team"), chromedp.Click(chromedp.ID("join")))
		u.waitFor("sent", "join team (sent)")
	}
	alice.run(chromedp.SetValue(chromedp.ID("gtext"), "standup"), chromedp.Click(chromedp.ID("gsend")))
	bob.waitFor("log", "[team] alice: standup")

	// Offline: the message waits in bob's inbox until he logs in again.
	bob.run(chromedp.Navigate("about:blank"))
	alice.send("bob", "while you were away")
	alice.waitFor("sent", "to bob: while you were away (sent)")
	bob.run(chromedp.Navigate(page(webB, "bob")))
	connected(bob, bInst)
	bob.waitFor("log", "alice: while you were away")

	// kill -9 of bob's gateway's runtime: his page moves to gateway A.
	// Messages sent meanwhile are acknowledged by the inbox write and
	// all arrive.
	_ = b.cmd.Process.Kill()
	var during []string
	for i := range 5 {
		m := fmt.Sprintf("during failover %d", i)
		alice.send("bob", m)
		during = append(during, m)
	}
	connected(bob, aInst)
	alice.send("bob", "after failover")
	during = append(during, "after failover")
	for _, m := range during {
		alice.waitFor("sent", "to bob: "+m+" (sent)")
		bob.waitFor("log", "alice: "+m)
	}
	// Bob's sessions now point at gateway A only: the one on the dead
	// gateway was cleaned up when a push to it failed.
	eventually(t, 20*time.Second, func() error {
		var items []struct {
			Key  string          `json:"key"`
			Data json.RawMessage `json:"data"`
		}
		r := do(t, "GET", a.url("/v1.0-alpha1/state/statestore/scan?prefix=%7Bu:bob%7D:session:"), nil)
		if r.Status != 200 {
			return fmt.Errorf("scan: %d %s", r.Status, r.Body)
		}
		r.json(t, &items)
		if len(items) == 0 {
			return fmt.Errorf("bob has no session")
		}
		for _, it := range items {
			var s struct{ Gateway string }
			_ = json.Unmarshal(it.Data, &s)
			if s.Gateway != aInst {
				return fmt.Errorf("session %s is on %q, want %q", it.Key, s.Gateway, aInst)
			}
		}
		return nil
	})
	// Nothing was shown twice, nothing failed.
	shown := map[string]bool{}
	for _, m := range bob.list("log") {
		if shown[m] {
			t.Fatalf("bob's page shows %q twice", m)
		}
		shown[m] = true
	}
	for _, s := range alice.list("sent") {
		if strings.Contains(s, "failover") && !strings.HasSuffix(s, "(sent)") {
			t.Fatalf("alice's request %q", s)
		}
	}
	if strings.Contains(a.output(), "panic") {
		t.Fatalf("a panic:\n%s", a.output())
	}
}

// imBadInput speaks WebSocket to the gateway on web the way a broken or
// hostile client would: each gets a clear error, and the gateway serves
// on.
func imBadInput(t *testing.T, web int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if r := do(t, "GET", fmt.Sprintf("http://127.0.0.1:%d/ws?user=not%%20a%%20name", web), nil); r.Status != 400 || !strings.Contains(string(r.Body), "letters, digits") {
		t.Fatalf("a login with a bad user name: %d %s", r.Status, r.Body)
	}
	dial := func() *websocket.Conn {
		c, _, err := websocket.Dial(ctx, fmt.Sprintf("ws://127.0.0.1:%d/ws?user=carol", web), nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.CloseNow() })
		if f := readFrame(ctx, t, c); f["type"] != "welcome" {
			t.Fatalf("first frame %v", f)
		}
		return c
	}
	c := dial()
	for frame, want := range map[string]string{
		`not json`:                              "malformed frame",
		`{"type":"teleport"}`:                   `unknown frame type "teleport"`,
		`{"type":"send","to":"x y","text":"a"}`: `bad recipient "x y"`,
		`{"type":"send","to":"carol"}`:          "empty message",
		`{"type":"ack"}`:                        "ack without a message id",
	} {
		if err := c.Write(ctx, websocket.MessageText, []byte(frame)); err != nil {
			t.Fatal(err)
		}
		if f := readFrame(ctx, t, c); f["type"] != "error" || !strings.Contains(fmt.Sprint(f["error"]), want) {
			t.Fatalf("frame %s: answer %v, want an error with %q", frame, f, want)
		}
	}
	// A frame over the limit closes the connection with 1009.
	_ = c.Write(ctx, websocket.MessageText, []byte(`{"type":"send","text":"`+strings.Repeat("x", 20<<10)+`"}`))
	if _, _, err := c.Read(ctx); websocket.CloseStatus(err) != websocket.StatusMessageTooBig {
		t.Fatalf("an oversized frame: %v, want close status 1009", err)
	}
	// The gateway serves on.
	c = dial()
	_ = c.Write(ctx, websocket.MessageText, []byte(`{"type":"ping","id":"p1"}`))
	if f := readFrame(ctx, t, c); f["type"] != "pong" {
		t.Fatalf("ping after the bad input: %v", f)
	}
}

func readFrame(ctx context.Context, t *testing.T, c *websocket.Conn) map[string]any {
	t.Helper()
	_, b, err := c.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var f map[string]any
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatalf("the gateway sent %q: %v", b, err)
	}
	return f
}
