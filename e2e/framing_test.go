package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// raw sends bytes on a new connection and returns the status line of the
// answer, and whether the runtime then closed the connection.
func raw(t *testing.T, addr, req string) (status string, closed bool) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	line, err := br.ReadString('\n')
	if err != nil {
		t.Fatalf("no answer to %q: %v", req, err)
	}
	// Read the rest of the answer; a closed connection ends it.
	for {
		l, err := br.ReadString('\n')
		if err != nil {
			return strings.TrimSpace(line), err == io.EOF
		}
		if l == "\r\n" {
			break
		}
	}
	_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
	_, err = io.Copy(io.Discard, br)
	return strings.TrimSpace(line), err == nil
}

// Request framing a proxy in front could read differently (request
// smuggling) gets 400 and the connection closes, on the HTTP API and on
// the internal port.
func TestAmbiguousFramingRefused(t *testing.T) {
	m := startMecha(t, "--app-id", "frame", "--header-timeout", "1s")
	for _, port := range []int{m.httpPort, m.internalPort} {
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		for _, tc := range []struct{ name, req string }{
			{"space before the colon", "POST /v1.0/publish/pubsub/t HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\nContent-Length: 3\r\n\r\nabc"},
			{"both lengths", "POST /v1.0/publish/pubsub/t HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n"},
			{"a bare LF header line", "POST /v1.0/publish/pubsub/t HTTP/1.1\r\nHost: x\nContent-Length: 2\r\n\r\n{}"},
			{"bare LF throughout", "GET /v1.0/healthz HTTP/1.1\nHost: x\n\n"},
		} {
			t.Run(fmt.Sprintf("%d %s", port, tc.name), func(t *testing.T) {
				status, closed := raw(t, addr, tc.req)
				if !strings.HasPrefix(status, "HTTP/1.1 400") || !closed {
					t.Fatalf("answer %q, closed %v: want 400 and the connection closed", status, closed)
				}
			})
		}
	}
	// A well-framed request still works.
	if status, _ := raw(t, fmt.Sprintf("127.0.0.1:%d", m.httpPort), "GET /v1.0/healthz HTTP/1.1\r\nHost: x\r\n\r\n"); !strings.HasPrefix(status, "HTTP/1.1 204") {
		t.Fatalf("healthz: %q", status)
	}
}

// The extended metadata is bounded in key and value size and count.
func TestMetadataLimits(t *testing.T) {
	m := startMecha(t, "--app-id", "meta")
	expectStatus(t, do(t, "PUT", m.url("/v1.0/metadata/ok"), "value"), 204)
	expectError(t, do(t, "PUT", m.url("/v1.0/metadata/big"), strings.Repeat("x", 64<<10+1)), 400, "ERR_BAD_REQUEST")
	expectError(t, do(t, "PUT", m.url("/v1.0/metadata/"+strings.Repeat("k", 257)), "v"), 400, "ERR_BAD_REQUEST")
	for i := range 255 {
		expectStatus(t, do(t, "PUT", m.url(fmt.Sprintf("/v1.0/metadata/k%d", i)), "v"), 204)
	}
	r := do(t, "PUT", m.url("/v1.0/metadata/one-too-many"), "v")
	expectError(t, r, 400, "ERR_BAD_REQUEST")
	if !strings.Contains(string(r.Body), "at most 256") {
		t.Errorf("the refusal does not name the limit: %s", r.Body)
	}
	expectStatus(t, do(t, "PUT", m.url("/v1.0/metadata/ok"), "replaced"), 204) // an existing key may change
}
