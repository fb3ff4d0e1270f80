package e2e

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"mecha/e2e/testapps/pattern"
)

func patternSHA(seed byte, n int64) string {
	h := sha256.New()
	_, _ = io.Copy(h, io.LimitReader(pattern.New(seed), n))
	return hex.EncodeToString(h.Sum(nil))
}

// onlyReader hides a reader's type, so that net/http sends it chunked.
type onlyReader struct{ io.Reader }

// peakRSS is a process's peak resident set (VmHWM) in bytes.
func peakRSS(t *testing.T, p *proc) int64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		t.Fatalf("reading peak RSS: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	t.Fatal("no VmHWM in /proc status")
	return 0
}

// TestLargeBodiesStream sends bodies far larger than the request limit
// through two runtimes, both ways, with and without a length, and checks
// every byte arrived while neither runtime held a body whole.
func TestLargeBodiesStream(t *testing.T) {
	appPort := startHTTPApp(t)
	b := startMecha(t, "--app-id", "appb", "--app-port", fmt.Sprint(appPort))
	a := startMecha(t, "--app-id", "appa", "--join", fmt.Sprintf("127.0.0.1:%d", b.gossipPort))
	eventually(t, 10*time.Second, func() error {
		if r := do(t, "GET", a.url("/v1.0/invoke/appb/method/echo/ping"), nil); r.Status != 200 {
			return fmt.Errorf("status %d: %s", r.Status, r.Body)
		}
		return nil
	})
	const size = 192 << 20 // 48 times the 4 MiB request limit
	client := &http.Client{Timeout: 2 * time.Minute}

	upload := func(url string, n int64, chunked bool) {
		t.Helper()
		var body io.Reader = io.LimitReader(pattern.New(1), n)
		if chunked {
			body = onlyReader{body}
		}
		req, _ := http.NewRequest("POST", url, body)
		if !chunked {
			req.ContentLength = n
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("upload of %d bytes (chunked %v) to %s: %v", n, chunked, url, err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if want := fmt.Sprintf("%d %s", n, patternSHA(1, n)); resp.StatusCode != 200 || string(got) != want {
			t.Fatalf("upload of %d bytes (chunked %v): status %d, the app saw %q, want %q", n, chunked, resp.StatusCode, got, want)
		}
	}
	download := func(url string, n int64, chunked bool) {
		t.Helper()
		if chunked {
			url += "&chunked=1"
		}
		resp, err := client.Get(url)
		if err != nil {
			t.Fatalf("download of %d bytes: %v", n, err)
		}
		defer resp.Body.Close()
		h := sha256.New()
		got, err := io.Copy(h, resp.Body)
		if err != nil || resp.StatusCode != 200 || got != n || hex.EncodeToString(h.Sum(nil)) != patternSHA(3, n) {
			t.Fatalf("download of %d bytes (chunked %v): status %d, got %d bytes (err %v), hash match %v",
				n, chunked, resp.StatusCode, got, err, hex.EncodeToString(h.Sum(nil)) == patternSHA(3, n))
		}
	}

	via := a.url("/v1.0/invoke/appb/method/sha")
	upload(via, size, false)
	upload(via, 24<<20, true)
	upload(via, 1000, true) // a small chunked body
	blob := a.url(fmt.Sprintf("/v1.0/invoke/appb/method/blob?seed=3&size=%d", size))
	download(blob, size, false)
	download(a.url(fmt.Sprintf("/v1.0/invoke/appb/method/blob?seed=3&size=%d", 24<<20)), 24<<20, true)
	// The dapr-app-id header form, and through one runtime (B's own app).
	upload(b.url("/v1.0/invoke/appb/method/sha"), 24<<20, true)
	req, _ := http.NewRequest("POST", a.url("/sha"), io.LimitReader(pattern.New(1), 24<<20))
	req.Header.Set("dapr-app-id", "appb")
	if resp, err := client.Do(req); err != nil || resp.StatusCode != 200 {
		t.Fatalf("dapr-app-id upload: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}

	for _, m := range []*mecha{a, b} {
		if rss := peakRSS(t, m.proc); rss > size/2 {
			t.Errorf("a runtime's peak RSS is %d MiB after %d MiB bodies: bodies are held whole", rss>>20, size>>20)
		} else {
			t.Logf("peak RSS %d MiB", rss>>20)
		}
	}

	// The other APIs still refuse a body over the limit, with or without
	// a length, and the connection stays usable for the next call.
	for _, chunked := range []bool{false, true} {
		var body io.Reader = strings.NewReader(strings.Repeat("x", 5<<20))
		if chunked {
			body = onlyReader{body}
		}
		req, _ := http.NewRequest("POST", a.url("/v1.0/state/statestore"), body)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("oversized state save (chunked %v): %v", chunked, err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 413 || !strings.Contains(string(got), "ERR_BODY_TOO_LARGE") {
			t.Fatalf("oversized state save (chunked %v): %d %s, want 413 ERR_BODY_TOO_LARGE", chunked, resp.StatusCode, got)
		}
	}
	r := do(t, "POST", a.url("/v1.0/state/statestore"), `[{"key":"k","value":1}]`)
	expectStatus(t, r, 204)
}
