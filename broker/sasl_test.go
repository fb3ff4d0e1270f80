package broker

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

var saslTestUsers = map[string]string{"alice": "s3cret-a", "bob": "s3cret-b"}

func startSASLBroker(t *testing.T) *Broker {
	t.Helper()
	return startBroker(t, func(c *Config) { c.SASLUsers = saslTestUsers })
}

// produceConsume produces one record with mech and reads it back: the
// whole path (metadata, produce, fetch) behind authentication.
func produceConsume(t *testing.T, b *Broker, mech sasl.Mechanism, topic string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.Addr()), kgo.SASL(mech), kgo.DefaultProduceTopic(topic),
		kgo.ConsumeTopics(topic), kgo.AllowAutoTopicCreation(), kgo.RetryTimeout(3*time.Second))
	if err != nil {
		return err
	}
	defer cl.Close()
	if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte("hello " + mech.Name())}).FirstErr(); err != nil {
		return err
	}
	for {
		fs := cl.PollFetches(ctx)
		if err := fs.Err0(); err != nil {
			return err
		}
		for _, r := range fs.Records() {
			if string(r.Value) == "hello "+mech.Name() {
				return nil
			}
		}
	}
}

func TestSASLMechanisms(t *testing.T) {
	b := startSASLBroker(t)
	good := scram.Auth{User: "alice", Pass: "s3cret-a"}
	for i, mech := range []sasl.Mechanism{
		plain.Auth{User: "bob", Pass: "s3cret-b"}.AsMechanism(),
		good.AsSha256Mechanism(),
		good.AsSha512Mechanism(),
	} {
		if err := produceConsume(t, b, mech, "sasl-"+string(rune('a'+i))); err != nil {
			t.Fatalf("%s: %v", mech.Name(), err)
		}
	}
}

func TestSASLRefusals(t *testing.T) {
	b := startSASLBroker(t)
	for _, mech := range []sasl.Mechanism{
		plain.Auth{User: "bob", Pass: "wrong"}.AsMechanism(),
		plain.Auth{User: "nobody", Pass: "s3cret-b"}.AsMechanism(),
		scram.Auth{User: "alice", Pass: "wrong"}.AsSha256Mechanism(),
		scram.Auth{User: "nobody", Pass: "s3cret-a"}.AsSha512Mechanism(),
	} {
		cl, err := kgo.NewClient(kgo.SeedBrokers(b.Addr()), kgo.SASL(mech))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err = kmsg.NewPtrMetadataRequest().RequestWith(ctx, cl)
		cancel()
		cl.Close()
		if !errors.Is(err, kerr.SaslAuthenticationFailed) {
			t.Errorf("%s with bad credentials: %v, want SASL_AUTHENTICATION_FAILED", mech.Name(), err)
		}
	}
	// No SASL at all: the connection closes at the first request that
	// is not ApiVersions.
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.Addr()), kgo.RetryTimeout(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := kmsg.NewPtrMetadataRequest().RequestWith(ctx, cl); err == nil {
		t.Fatal("metadata without authentication answered")
	}
}

// The wire, by hand: an unknown mechanism gets 33 with the list; a
// request before authentication closes the connection; SaslAuthenticate
// before a handshake gets 34 and the connection closes.
func TestSASLWire(t *testing.T) {
	b := startSASLBroker(t)
	dial := func() (net.Conn, *bufio.Reader) {
		c, err := net.Dial("tcp", b.Addr())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		return c, bufio.NewReader(c)
	}
	send := func(c net.Conn, req kmsg.Request, version int16) {
		req.SetVersion(version)
		body := req.AppendTo(nil)
		hdr := binary.BigEndian.AppendUint16(nil, uint16(req.Key()))
		hdr = binary.BigEndian.AppendUint16(hdr, uint16(version))
		hdr = binary.BigEndian.AppendUint32(hdr, 7)
		hdr = binary.BigEndian.AppendUint16(hdr, 1)
		hdr = append(hdr, 't')
		if req.IsFlexible() {
			hdr = append(hdr, 0)
		}
		frame := binary.BigEndian.AppendUint32(nil, uint32(len(hdr)+len(body)))
		if _, err := c.Write(append(append(frame, hdr...), body...)); err != nil {
			t.Fatal(err)
		}
	}
	read := func(r *bufio.Reader, resp kmsg.Response, version int16) error {
		var size [4]byte
		if _, err := io.ReadFull(r, size[:]); err != nil {
			return err
		}
		b := make([]byte, binary.BigEndian.Uint32(size[:]))
		if _, err := io.ReadFull(r, b); err != nil {
			return err
		}
		resp.SetVersion(version)
		skip := 4
		if resp.IsFlexible() {
			skip++
		}
		return resp.ReadFrom(b[skip:])
	}

	c, r := dial()
	hs := kmsg.NewPtrSASLHandshakeRequest()
	hs.Mechanism = "GSSAPI"
	send(c, hs, 1)
	hr := kmsg.NewPtrSASLHandshakeResponse()
	if err := read(r, hr, 1); err != nil {
		t.Fatal(err)
	}
	if hr.ErrorCode != kerr.UnsupportedSaslMechanism.Code || !strings.Contains(strings.Join(hr.SupportedMechanisms, " "), "SCRAM-SHA-512") {
		t.Fatalf("GSSAPI: code %d, mechanisms %v", hr.ErrorCode, hr.SupportedMechanisms)
	}
	if err := read(r, hr, 1); err == nil {
		t.Fatal("the connection stayed open after an unsupported mechanism")
	}

	c, r = dial()
	send(c, kmsg.NewPtrMetadataRequest(), 1)
	if err := read(r, kmsg.NewPtrMetadataResponse(), 1); err == nil {
		t.Fatal("metadata before authentication was answered")
	}

	c, r = dial()
	au := kmsg.NewPtrSASLAuthenticateRequest()
	au.SASLAuthBytes = []byte("\x00alice\x00s3cret-a")
	send(c, au, 2)
	ar := kmsg.NewPtrSASLAuthenticateResponse()
	if err := read(r, ar, 2); err != nil {
		t.Fatal(err)
	}
	if ar.ErrorCode != kerr.IllegalSaslState.Code {
		t.Fatalf("SaslAuthenticate before a handshake: code %d", ar.ErrorCode)
	}

	// Without users, the broker offers no mechanism.
	open := startBroker(t)
	c, err := net.Dial("tcp", open.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	hs.Mechanism = "PLAIN"
	send(c, hs, 1)
	if err := read(bufio.NewReader(c), hr, 1); err != nil {
		t.Fatal(err)
	}
	if hr.ErrorCode != kerr.UnsupportedSaslMechanism.Code || len(hr.SupportedMechanisms) != 0 {
		t.Fatalf("a broker without users: code %d, mechanisms %v", hr.ErrorCode, hr.SupportedMechanisms)
	}
}

// kcat (librdkafka) authenticates with SCRAM-SHA-256 and PLAIN, and a
// wrong password fails.
func TestKcatSASL(t *testing.T) {
	kcat := kcatPath(t)
	b := startSASLBroker(t)
	auth := func(mech, user, pass string) []string {
		return []string{"-b", b.Addr(), "-X", "security.protocol=SASL_PLAINTEXT", "-X", "sasl.mechanisms=" + mech,
			"-X", "sasl.username=" + user, "-X", "sasl.password=" + pass}
	}
	runKcat(t, kcat, "k1:v1\n", append(auth("SCRAM-SHA-256", "alice", "s3cret-a"), "-P", "-t", "kcat-sasl", "-K:")...)
	got := runKcat(t, kcat, "", append(auth("PLAIN", "bob", "s3cret-b"), "-C", "-t", "kcat-sasl", "-o", "beginning", "-e", "-q", "-K:")...)
	if got != "k1:v1\n" {
		t.Fatalf("kcat -C printed %q", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	outb, err := exec.CommandContext(ctx, kcat, append(auth("SCRAM-SHA-512", "alice", "wrong"), "-L", "-m", "5")...).CombinedOutput()
	out := string(outb)
	if err == nil || !strings.Contains(strings.ToLower(out), "authentication") {
		t.Fatalf("kcat with a wrong password: err %v, output:\n%s", err, out)
	}
}

func TestLoadSASLUsers(t *testing.T) {
	dir := t.TempDir()
	for name, tc := range map[string]struct{ text, err string }{
		"ok":       {"# users\nalice:pw\n\nbob:p:w\n", ""},
		"no colon": {"alice\n", "line 1: want name:password"},
		"empty":    {"alice:\n", "line 1: empty name or password"},
		"twice":    {"a:1\na:2\n", "line 2: user \"a\" twice"},
		"bad name": {"a=b:1\n", "may not hold"},
		"no user":  {"# nothing\n", "no user"},
		"no file":  {"", "no such file"},
	} {
		p := filepath.Join(dir, name)
		if name != "no file" {
			if err := os.WriteFile(p, []byte(tc.text), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		users, err := LoadSASLUsers(p)
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("%s: %v", name, err)
		case tc.err == "" && (users["alice"] != "pw" || users["bob"] != "p:w"):
			t.Errorf("%s: users %v", name, users)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%s: %v, want %q", name, err, tc.err)
		}
	}
}

func FuzzParsePlain(f *testing.F) {
	f.Add([]byte("\x00alice\x00pw"))
	f.Add([]byte("alice\x00alice\x00pw"))
	f.Add([]byte("\x00\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		u, p, err := parsePlain(b)
		if err == nil && (u == "" || p == "") {
			t.Fatalf("accepted an empty user or password from %q", b)
		}
	})
}

// The SCRAM exchange takes any bytes without a panic, and never
// authenticates without the proof of the password.
func FuzzSCRAMServer(f *testing.F) {
	a, err := newSASLAuth(map[string]string{"alice": "pw"})
	if err != nil {
		f.Fatal(err)
	}
	f.Add("n,,n=alice,r=abc", "c=biws,r=abc,p=AAAA")
	f.Add("y,,n=alice,r=x", "c=eSws,r=xx,p=")
	f.Add("n,,n=al=2Cice,r=1,e=2", ",p=,p=")
	f.Fuzz(func(t *testing.T, first, final string) {
		c := &scramConv{store: a.scrams[mechScram256]}
		server, err := c.step(first)
		if err != nil {
			return
		}
		if !strings.HasPrefix(server, "r=") {
			t.Fatalf("server-first %q", server)
		}
		if _, err := c.step(final); err == nil || c.done {
			t.Fatalf("authenticated by %q then %q", first, final)
		}
	})
}

// testCert writes a self-signed certificate for 127.0.0.1 into dir:
// the certificate (its own CA) and key files.
func testCert(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:                  true,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "broker.crt"), filepath.Join(dir, "broker.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// SASL over TLS (Kafka's SASL_SSL): franz-go and kcat authenticate over
// the encrypted connection; a plaintext client gets nowhere.
func TestSASLOverTLS(t *testing.T) {
	certFile, keyFile := testCert(t, t.TempDir())
	b := startBroker(t, func(c *Config) {
		c.SASLUsers = saslTestUsers
		c.TLSCertFile, c.TLSKeyFile = certFile, keyFile
	})
	pemBytes, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pemBytes)
	mech := scram.Auth{User: "alice", Pass: "s3cret-a"}.AsSha256Mechanism()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.Addr()), kgo.SASL(mech), kgo.DialTLSConfig(&tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}),
		kgo.DefaultProduceTopic("tls"), kgo.AllowAutoTopicCreation())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.ProduceSync(ctx, &kgo.Record{Key: []byte("k"), Value: []byte("over tls")}).FirstErr(); err != nil {
		t.Fatalf("produce over TLS: %v", err)
	}
	plainCl, err := kgo.NewClient(kgo.SeedBrokers(b.Addr()), kgo.SASL(mech))
	if err != nil {
		t.Fatal(err)
	}
	defer plainCl.Close()
	pctx, pcancel := context.WithTimeout(ctx, 3*time.Second)
	defer pcancel()
	if _, err := kmsg.NewPtrMetadataRequest().RequestWith(pctx, plainCl); err == nil {
		t.Fatal("a plaintext client was answered by a TLS listener")
	}
	kcat := kcatPath(t)
	got := runKcat(t, kcat, "", "-b", b.Addr(), "-X", "security.protocol=SASL_SSL", "-X", "ssl.ca.location="+certFile,
		"-X", "sasl.mechanisms=SCRAM-SHA-512", "-X", "sasl.username=bob", "-X", "sasl.password=s3cret-b",
		"-C", "-t", "tls", "-o", "beginning", "-e", "-q", "-K:")
	if got != "k:over tls\n" {
		t.Fatalf("kcat over TLS printed %q", got)
	}
}
