package clustertls

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func member(t *testing.T, caDir, name string) *Config {
	t.Helper()
	cert, key, err := Issue(caDir, name, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	c, err := Load(filepath.Join(caDir, CACert), cert, key)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// handshake connects client to server over loopback and returns each
// side's handshake error.
func handshake(t *testing.T, server, client *tls.Config) (serr, cerr error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		done <- tls.Server(c, server).Handshake()
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	tc := tls.Client(c, client)
	cerr = tc.Handshake()
	if cerr == nil {
		// TLS 1.3: the server's verdict on the client certificate
		// arrives with the first read.
		_ = tc.SetReadDeadline(deadline())
		_, cerr = tc.Read(make([]byte, 1))
		var ne net.Error
		if errors.As(cerr, &ne) && ne.Timeout() || errors.Is(cerr, io.EOF) {
			cerr = nil // no alert: the server took the certificate
		}
	}
	return <-done, cerr
}

func TestMutualTLS(t *testing.T) {
	ca, other := t.TempDir(), t.TempDir()
	if err := CreateCA(ca, "test cluster"); err != nil {
		t.Fatal(err)
	}
	if err := CreateCA(ca, "again"); !errors.Is(err, ErrExists) {
		t.Fatalf("a second CA over the first: %v", err)
	}
	if err := CreateCA(other, "another cluster"); err != nil {
		t.Fatal(err)
	}
	a, b, stranger := member(t, ca, "a"), member(t, ca, "b"), member(t, other, "x")

	if serr, cerr := handshake(t, a.Server(), b.Client("")); serr != nil || cerr != nil {
		t.Fatalf("two members: server %v, client %v", serr, cerr)
	}
	if serr, _ := handshake(t, a.Server(), stranger.Client("")); serr == nil {
		t.Error("a member took a client certified by another CA")
	}
	if _, cerr := handshake(t, stranger.Server(), a.Client("")); cerr == nil || !strings.Contains(cerr.Error(), "not a member") {
		t.Errorf("a member dialled a server certified by another CA: %v", cerr)
	}
	noCert := &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}
	if serr, _ := handshake(t, a.Server(), noCert); serr == nil {
		t.Error("a member took a client without a certificate")
	}
	if _, err := Load(filepath.Join(ca, CACert), filepath.Join(other, CACert), filepath.Join(other, CAKey)); err == nil {
		t.Error("Load took a CA certificate as a member certificate")
	}
}

func deadline() time.Time { return time.Now().Add(200 * time.Millisecond) }
