package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// reachable reports whether something accepts TCP at addr.
func reachable(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// startBare starts `mecha run` with exactly args (after the free ports)
// and parses its ports.
func startBare(t *testing.T, env []string, args ...string) *mecha {
	t.Helper()
	base := []string{"run", "--dapr-http-port", "0", "--dapr-grpc-port", "0", "--metrics-port", "0", "--broker=false",
		"--internal-port", "0", "--gossip-port", "0", "--data-dir", t.TempDir()}
	p := startEnv(t, env, bins.mecha, append(base, args...)...)
	g := p.waitLine(apiRE, 20*time.Second)
	m := &mecha{proc: p}
	m.httpPort, _ = strconv.Atoi(g[1])
	m.grpcPort, _ = strconv.Atoi(g[2])
	m.metricsPort, _ = strconv.Atoi(g[3])
	m.internalPort, _ = strconv.Atoi(g[5])
	m.gossipPort, _ = strconv.Atoi(g[6])
	return m
}

// Without a gossip key, gossip and the internal port listen on loopback
// only (127.0.0.1, not the rest of 127/8 nor any other address); beyond
// it they need the key, or an explicit, loudly logged insecure flag.
func TestClusterPortsStayOnLoopbackWithoutAuthentication(t *testing.T) {
	m := startBare(t, nil, "--app-id", "lo")
	for name, p := range map[string]int{"internal": m.internalPort, "gossip": m.gossipPort} {
		if !reachable(fmt.Sprintf("127.0.0.1:%d", p)) {
			t.Errorf("the %s port does not answer on 127.0.0.1", name)
		}
		if reachable(fmt.Sprintf("127.0.0.2:%d", p)) {
			t.Errorf("the %s port answers on 127.0.0.2: it listens beyond 127.0.0.1 without authentication", name)
		}
	}

	out, err := exec.Command(bins.mecha, "run", "--app-id", "x", "--gossip-bind-address", "0.0.0.0", "--data-dir", t.TempDir()).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "--gossip-key") || !strings.Contains(string(out), "--allow-insecure-cluster") {
		t.Fatalf("binding 0.0.0.0 without a key: err %v, output:\n%s", err, out)
	}
	out, err = exec.Command(bins.mecha, "run", "--app-id", "x", "--join", "10.1.2.3:7946", "--data-dir", t.TempDir()).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "--join 10.1.2.3:7946") {
		t.Fatalf("joining beyond loopback without a key: err %v, output:\n%s", err, out)
	}

	open := startBare(t, nil, "--app-id", "open", "--allow-insecure-cluster", "--gossip-bind-address", "0.0.0.0", "--advertise-address", "127.0.0.1")
	if !strings.Contains(open.output(), "INSECURE CLUSTER") {
		t.Errorf("--allow-insecure-cluster beyond loopback logged no warning:\n%s", open.output())
	}
	if !reachable(fmt.Sprintf("127.0.0.2:%d", open.internalPort)) {
		t.Error("with --allow-insecure-cluster on 0.0.0.0 the internal port does not answer on 127.0.0.2")
	}
}

// The embedded broker listens on 127.0.0.1 even when the APIs listen
// beyond it (--dapr-listen-addresses), and beyond loopback only with SASL
// users (--broker-sasl-users) or an explicit, loudly logged insecure flag.
func TestBrokerStaysOnLoopbackWithoutAuthentication(t *testing.T) {
	m := startMecha(t, "--app-id", "lo", "--broker-port", "0", "--dapr-listen-addresses", "0.0.0.0")
	if !reachable(fmt.Sprintf("127.0.0.1:%d", m.brokerPort)) {
		t.Fatal("the broker does not answer on 127.0.0.1")
	}
	if reachable(fmt.Sprintf("127.0.0.2:%d", m.brokerPort)) {
		t.Fatal("the broker answers on 127.0.0.2: it listens beyond 127.0.0.1 without authentication")
	}
	if !reachable(fmt.Sprintf("127.0.0.2:%d", m.httpPort)) {
		t.Fatal("--dapr-listen-addresses 0.0.0.0 did not open the HTTP API beyond 127.0.0.1")
	}
	out, err := exec.Command(bins.mecha, "run", "--app-id", "x", "--broker-listen-address", "0.0.0.0", "--data-dir", t.TempDir()).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "--broker-listen-address 0.0.0.0") || !strings.Contains(string(out), "--allow-insecure-broker") {
		t.Fatalf("the broker on 0.0.0.0 without the flag: err %v, output:\n%s", err, out)
	}
	open := startMecha(t, "--app-id", "open", "--broker-port", "0", "--broker-listen-address", "0.0.0.0", "--allow-insecure-broker")
	if !reachable(fmt.Sprintf("127.0.0.2:%d", open.brokerPort)) {
		t.Error("with --allow-insecure-broker on 0.0.0.0 the broker does not answer on 127.0.0.2")
	}
	if !strings.Contains(open.output(), "INSECURE BROKER") {
		t.Errorf("--allow-insecure-broker beyond loopback logged no warning:\n%s", open.output())
	}
	// With SASL users the broker may leave loopback: clients
	// authenticate, and one that does not is refused.
	users := filepath.Join(t.TempDir(), "users")
	if err := os.WriteFile(users, []byte("app:app-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	sasl := startMecha(t, "--app-id", "sasl", "--broker-port", "0", "--broker-listen-address", "0.0.0.0", "--broker-sasl-users", users)
	if strings.Contains(sasl.output(), "INSECURE BROKER") {
		t.Errorf("a broker with SASL users logged INSECURE BROKER:\n%s", sasl.output())
	}
	addr := fmt.Sprintf("127.0.0.2:%d", sasl.brokerPort)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, tc := range []struct {
		opts []kgo.Opt
		ok   bool
	}{
		{[]kgo.Opt{kgo.SASL(scram.Auth{User: "app", Pass: "app-secret"}.AsSha512Mechanism())}, true},
		{[]kgo.Opt{kgo.SASL(scram.Auth{User: "app", Pass: "guess"}.AsSha512Mechanism())}, false},
		{nil, false},
	} {
		cl, err := kgo.NewClient(append(tc.opts, kgo.SeedBrokers(addr))...)
		if err != nil {
			t.Fatal(err)
		}
		rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
		_, err = kmsg.NewPtrMetadataRequest().RequestWith(rctx, cl)
		rcancel()
		cl.Close()
		if (err == nil) != tc.ok {
			t.Errorf("metadata through %s (authenticated: %v): %v", addr, tc.ok, err)
		}
	}
}

// With the cluster's mutual TLS, runtimes holding certificates of one CA
// (made with `mecha ca`) call each other's apps; the internal port
// refuses plain connections and certificates of another CA.
func TestMutualTLSBetweenRuntimes(t *testing.T) {
	ca, other, certs := t.TempDir(), t.TempDir(), t.TempDir()
	run := func(args ...string) string {
		out, err := exec.Command(bins.mecha, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("mecha %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	run("ca", "create", "--dir", ca)
	run("ca", "create", "--dir", other)
	run("ca", "issue", "--dir", ca, "--name", "a", "--out", certs)
	run("ca", "issue", "--dir", ca, "--name", "b", "--out", certs)
	run("ca", "issue", "--dir", other, "--name", "x", "--out", other)
	key := strings.TrimSpace(run("keygen"))
	tlsArgs := func(name string) []string {
		return []string{"--tls-ca", filepath.Join(ca, "ca.crt"), "--tls-cert", filepath.Join(certs, name+".crt"), "--tls-key", filepath.Join(certs, name+".key"), "--gossip-key", key}
	}
	bApp := startHTTPApp(t)
	b := startMecha(t, append([]string{"--app-id", "tls-b", "--app-port", fmt.Sprint(bApp)}, tlsArgs("b")...)...)
	a := startMecha(t, append([]string{"--app-id", "tls-a", "--join", fmt.Sprintf("127.0.0.1:%d", b.gossipPort)}, tlsArgs("a")...)...)
	eventually(t, 15*time.Second, func() error {
		r := do(t, "POST", a.url("/v1.0/invoke/tls-b/method/echo/x"), "hi")
		if r.Status != 200 {
			return fmt.Errorf("a → b over mutual TLS: %d %s", r.Status, r.Body)
		}
		var e echo
		r.json(t, &e)
		if e.Body != "hi" || e.Headers["Dapr-Caller-App-Id"] != "tls-a" {
			return fmt.Errorf("b's app saw %+v", e)
		}
		return nil
	})

	addr := fmt.Sprintf("127.0.0.1:%d", b.internalPort)
	// Plain HTTP: no TLS handshake, no answer.
	c := &http.Client{Timeout: 5 * time.Second}
	if resp, err := c.Get("http://" + addr + "/echo/x"); err == nil {
		resp.Body.Close()
		t.Fatalf("a plain HTTP call to the internal port got %d", resp.StatusCode)
	}
	// A certificate of another CA.
	x, err := tls.LoadX509KeyPair(filepath.Join(other, "x.crt"), filepath.Join(other, "x.key"))
	if err != nil {
		t.Fatal(err)
	}
	tc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true, Certificates: []tls.Certificate{x}}}}
	req, _ := http.NewRequest("GET", "https://"+addr+"/echo/x", nil)
	req.Header.Set("dapr-callee-app-id", "tls-b")
	req.Header.Set("mecha-peer-token", "guess")
	if resp, err := tc.Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("a client certified by another CA got %d", resp.StatusCode)
	}
	// No certificate at all.
	nc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	if resp, err := nc.Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("a client without a certificate got %d", resp.StatusCode)
	}
}

// The admin APIs of the metrics port (traffic policies, stream control)
// want the API token when the runtime has one; credentials never reach
// the app.
func TestAdminAPIsWantTheToken(t *testing.T) {
	const tok = "admin-secret"
	appPort := startHTTPApp(t)
	m := startMechaEnv(t, []string{"DAPR_API_TOKEN=" + tok}, "--app-id", "adm", "--app-port", fmt.Sprint(appPort))
	admin := fmt.Sprintf("http://127.0.0.1:%d", m.metricsPort)
	policy := `{"loadBalancer":"leastOutstanding"}`
	expectStatus(t, do(t, "PUT", admin+"/v1.0-alpha1/traffic/svc", policy), 401)
	expectStatus(t, do(t, "PUT", admin+"/v1.0-alpha1/traffic/svc", policy, "dapr-api-token", "wrong"), 401)
	expectStatus(t, do(t, "GET", admin+"/v1.0-alpha1/stream/", nil), 401)
	expectStatus(t, do(t, "PUT", admin+"/v1.0-alpha1/traffic/svc", policy, "dapr-api-token", tok), 200)
	expectStatus(t, do(t, "GET", admin+"/v1.0-alpha1/traffic/svc", nil, "dapr-api-token", tok), 200)
	expectStatus(t, do(t, "GET", admin+"/metrics", nil), 200) // scraping stays open

	// The caller's token is checked by the runtime and not passed on,
	// and the app cannot claim to be another caller.
	eventually(t, 10*time.Second, func() error {
		r := do(t, "GET", m.url("/v1.0/invoke/adm/method/echo/x"), nil, "dapr-api-token", tok, "dapr-caller-app-id", "forged", "mecha-peer-token", "x")
		if r.Status != 200 {
			return fmt.Errorf("%d %s", r.Status, r.Body)
		}
		var e echo
		r.json(t, &e)
		if _, leaked := e.Headers["Dapr-Api-Token"]; leaked || e.Headers["Mecha-Peer-Token"] != "" || e.Headers["Dapr-Caller-App-Id"] != "adm" {
			return fmt.Errorf("the app saw %v", e.Headers)
		}
		return nil
	})

	// Without a token, changes over a non-loopback admin port are refused.
	n := startMecha(t, "--app-id", "adm2", "--dapr-listen-addresses", "0.0.0.0")
	expectStatus(t, do(t, "PUT", fmt.Sprintf("http://127.0.0.1:%d/v1.0-alpha1/traffic/svc", n.metricsPort), policy), 403)
}

// With --broker-acls a Kafka client may do only what its user is
// granted, while the runtime's own pubsub (in-process) is not held back:
// an event published through the Dapr API is refused to a client until
// a super user grants it READ.
func TestBrokerACLs(t *testing.T) {
	users := filepath.Join(t.TempDir(), "users")
	if err := os.WriteFile(users, []byte("app:app-secret\nops:ops-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	m := startMecha(t, "--app-id", "acl", "--broker-port", "0", "--broker-sasl-users", users, "--broker-acls", "--broker-super-users", "ops")
	expectStatus(t, do(t, "POST", m.url("/v1.0/publish/pubsub/audit"), `{"n":1}`, "Content-Type", "application/json"), 204)
	addr := fmt.Sprintf("127.0.0.1:%d", m.brokerPort)
	client := func(user, pass string, opts ...kgo.Opt) *kgo.Client {
		cl, err := kgo.NewClient(append(opts, kgo.SeedBrokers(addr), kgo.SASL(scram.Auth{User: user, Pass: pass}.AsSha256Mechanism()))...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(cl.Close)
		return cl
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	readAudit := func() (int16, []byte) {
		req := kmsg.NewPtrFetchRequest()
		req.MaxWaitMillis, req.MaxBytes = 100, 1<<20
		rt := kmsg.NewFetchRequestTopic()
		rt.Topic = "audit"
		rp := kmsg.NewFetchRequestTopicPartition()
		rp.PartitionMaxBytes = 1 << 20
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		resp, err := req.RequestWith(ctx, client("app", "app-secret"))
		if err != nil {
			t.Fatal(err)
		}
		p := resp.Topics[0].Partitions[0]
		return p.ErrorCode, p.RecordBatches
	}
	if code, _ := readAudit(); code != kerr.TopicAuthorizationFailed.Code {
		t.Fatalf("app reads audit without a grant: code %d, want TOPIC_AUTHORIZATION_FAILED", code)
	}
	res, err := kadm.NewClient(client("ops", "ops-secret")).CreateACLs(ctx, kadm.NewACLs().Allow("User:app").Topics("audit").Operations(kadm.OpRead))
	if err != nil || len(res) != 1 || res[0].Err != nil {
		t.Fatalf("ops grants app READ on audit: %+v %v", res, err)
	}
	code, batches := readAudit()
	if code != 0 || !strings.Contains(string(batches), `{"n":1}`) {
		t.Fatalf("app reads audit after the grant: code %d, %d bytes", code, len(batches))
	}
}
