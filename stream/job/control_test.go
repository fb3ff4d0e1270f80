package job

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"mecha/broker/brokertest"
	"mecha/internal/poll"
)

// startControlled runs a stdout job over a one-partition topic with a
// long checkpoint interval and returns it with a producer.
func startControlled(t *testing.T) (*Runner, *kgo.Client) {
	t.Helper()
	addr := brokertest.Start(t)
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.DefaultProduceTopic("ctl"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	if _, err := kadm.NewClient(cl).CreateTopic(context.Background(), 1, 1, nil, "ctl"); err != nil {
		t.Fatal(err)
	}
	spec, err := ParseDocument([]byte(`{"apiVersion":"mecha.io/v1alpha1","kind":"StreamJob","metadata":{"name":"ctl"},
	 "spec":{"source":{"topic":"ctl"},"window":{"type":"tumbling","size":"1s"},"aggregate":{"type":"count"},
	  "sink":{"type":"stdout"},"checkpoint":{"interval":"1h"}}}`))
	if err != nil {
		t.Fatal(err)
	}
	r, err := New(spec, Options{Brokers: addr, DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return r, cl
}

func produceN(t *testing.T, cl *kgo.Client, n int) {
	t.Helper()
	var recs []*kgo.Record
	for i := 0; i < n; i++ {
		recs = append(recs, &kgo.Record{Value: []byte(`{"x":1}`)})
	}
	if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

func TestControlPauseResumeSamplingCheckpoint(t *testing.T) {
	r, cl := startControlled(t)
	produceN(t, cl, 10)
	poll.Until(t, 10*time.Second, "10 records read", func() bool { return r.Status().In == 10 })

	r.Pause()
	poll.Until(t, 5*time.Second, "the pause to take effect", func() bool { st := r.Status(); return st.Paused && !st.Reading })
	produceN(t, cl, 10)
	// Still paused after the records arrived: a full poll round later,
	// nothing was read.
	time.Sleep(1500 * time.Millisecond) // a pause is the absence of progress: give it time to go wrong
	if in := r.Status().In; in != 10 {
		t.Fatalf("read %d records while paused, want still 10", in)
	}
	r.Resume()
	poll.Until(t, 10*time.Second, "the records held back by the pause", func() bool { return r.Status().In == 20 })

	if err := r.SetSampling(0); err == nil {
		t.Fatal("sampling 0 accepted")
	}
	if err := r.SetSampling(0.5); err != nil {
		t.Fatal(err)
	}
	produceN(t, cl, 200)
	poll.Until(t, 10*time.Second, "the sampled records", func() bool { return r.Status().In == 220 })
	wantOut := 0
	for off := int64(20); off < 220; off++ {
		if !sampled(off, 0.5) {
			wantOut++
		}
	}
	if got := r.Status().SampledOut; got != int64(wantOut) || wantOut < 60 || wantOut > 140 {
		t.Fatalf("sampled out %d of 200, want %d (about half)", got, wantOut)
	}

	if r.Status().CheckpointCount != 0 {
		t.Fatal("checkpointed before the 1h interval")
	}
	if err := r.TriggerCheckpoint(); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 10*time.Second, "the triggered checkpoint", func() bool { return r.Status().CheckpointCount == 1 })
}

func TestControlRateLimit(t *testing.T) {
	r, cl := startControlled(t)
	if err := r.SetRateLimit(-1); err == nil {
		t.Fatal("negative rate accepted")
	}
	if err := r.SetRateLimit(100); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	produceN(t, cl, 150)
	poll.Until(t, 20*time.Second, "150 records read", func() bool { return r.Status().In == 150 })
	// 150 records at 100/s with a burst of 10 take at least 1.4 s; a
	// lower bound only, so a slow machine cannot make this fail.
	if el := time.Since(start); el < 1400*time.Millisecond {
		t.Fatalf("150 records read in %s, faster than the 100/s limit allows", el)
	}
}

func TestControlHTTP(t *testing.T) {
	r, _ := startControlled(t)
	var jobs Jobs
	jobs.Add(r)
	srv := httptest.NewServer(&jobs)
	defer srv.Close()
	call := func(method, path, body string) (int, string) {
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b strings.Builder
		_, _ = fmt.Fprint(&b, readAll(resp))
		return resp.StatusCode, b.String()
	}
	code, body := call("GET", "/v1.0-alpha1/stream/jobs", "")
	var list []Status
	if code != 200 || json.Unmarshal([]byte(body), &list) != nil || len(list) != 1 || list[0].Job != "ctl" {
		t.Fatalf("list: %d %s", code, body)
	}
	if code, body := call("POST", "/v1.0-alpha1/stream/jobs/ctl/pause", ""); code != 200 {
		t.Fatalf("pause: %d %s", code, body)
	}
	poll.Until(t, 5*time.Second, "the pause through the API to take effect", func() bool {
		_, body := call("GET", "/v1.0-alpha1/stream/jobs/ctl", "")
		return strings.Contains(body, `"paused":true`)
	})
	if code, body := call("PUT", "/v1.0-alpha1/stream/jobs/ctl/config", `{"rateLimit":500,"sampling":0.25,"checkpoints":false}`); code != 200 ||
		!strings.Contains(body, `"rateLimit":500`) || !strings.Contains(body, `"sampling":0.25`) || !strings.Contains(body, `"checkpoints":false`) {
		t.Fatalf("config: %d %s", code, body)
	}
	for _, c := range []struct{ method, path, body, want string }{
		{"PUT", "/v1.0-alpha1/stream/jobs/ctl/config", `{"sampling":2}`, "sampling 2 must be in (0, 1]"},
		{"PUT", "/v1.0-alpha1/stream/jobs/ctl/config", `{"speed":2}`, `unknown field \"speed\"`},
		{"POST", "/v1.0-alpha1/stream/jobs/nope/pause", "", `no stream job \"nope\"`},
		{"DELETE", "/v1.0-alpha1/stream/jobs/ctl", "", "no DELETE"},
	} {
		if code, body := call(c.method, c.path, c.body); code < 400 || !strings.Contains(body, c.want) {
			t.Errorf("%s %s %s: %d %s, want an error saying %s", c.method, c.path, c.body, code, body, c.want)
		}
	}
}

func readAll(resp *http.Response) string {
	var b strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			return b.String()
		}
	}
}
