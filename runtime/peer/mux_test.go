package peer

import (
	"context"
	"io"
	"net"
	"net/http"
	"testing"

	"mecha/internal/muxconn"
	"mecha/runtime/appchannel"
)

// The internal port serves muxconn connections beside HTTP/1.1, each
// told by its first bytes.
func TestInternalPortServesMuxconn(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{
		Lookup: func(string) (func() appchannel.Channel, string, bool) { return nil, "", false },
		Mux: &muxconn.Server{Token: "tok", Handler: func(_ context.Context, m uint16, b []byte) ([]byte, error) {
			return append([]byte("mux:"), b...), nil
		}},
		Token: "tok",
	}
	go func() { _ = s.ServeBoth(l) }()
	defer s.Shutdown(context.Background())
	cl := &muxconn.Client{Addr: l.Addr().String(), Token: "tok"}
	defer cl.Close()
	out, err := cl.Call(context.Background(), 1, []byte("hi"))
	if err != nil || string(out) != "mux:hi" {
		t.Fatalf("muxconn on the internal port: %q, %v", out, err)
	}
	// HTTP/1.1 on the same port still answers.
	resp, err := http.Get("http://" + l.Addr().String() + "/x")
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden { // no peer token: the HTTP server answered
		t.Fatalf("HTTP on the internal port: %d", resp.StatusCode)
	}
}
