package e2e

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestStreamJobFailover: three runtimes of a broker cluster carry the same
// StreamJob, counting each page's distinct users per second (exact UV)
// into Crux. The control plane places it on one of them (the leader of
// its checkpoint's slot); that runtime is killed with kill -9 mid-stream. Another runtime resumes the job from the
// checkpoint kept in the Crux cluster within 30 s, and every window's UV
// read back through a surviving runtime matches the reference computed
// from the clicks published: nothing lost, nothing counted twice.
func TestStreamJobFailover(t *testing.T) {
	res := t.TempDir()
	writeFile(t, res, "job.yaml", clickJob("counts", "countDistinct", `  sink:
    type: state
  checkpoint:
    interval: 100ms
`))
	dirs := []string{t.TempDir(), t.TempDir(), t.TempDir()}
	args := func(i int, extra ...string) []string {
		return append([]string{"--app-id", "counter", "--bootstrap-expect", "3", "--broker-cluster", "--broker-port", "0",
			"--cluster-id", "e2e-stream", "--resources-path", res, "--data-dir", dirs[i]}, extra...)
	}
	a := startMecha(t, args(0)...)
	join := fmt.Sprintf("127.0.0.1:%d", a.gossipPort)
	b := startMecha(t, args(1, "--join", join)...)
	c := startMecha(t, args(2, "--join", join)...)
	runtimes := []*mecha{a, b, c}
	// runsIt reports whether m lists the job among its running ones.
	runsIt := func(m *mecha) bool {
		out, err := exec.Command(bins.mecha, "stream", "--admin", fmt.Sprintf("127.0.0.1:%d", m.metricsPort), "-o", "json", "list").CombinedOutput()
		return err == nil && strings.Contains(string(out), `"job": "counts"`)
	}
	var owner *mecha
	eventually(t, 60*time.Second, func() error {
		var on []*mecha
		for _, m := range runtimes {
			if runsIt(m) {
				on = append(on, m)
			}
		}
		if len(on) != 1 {
			return fmt.Errorf("the job runs on %d runtimes, want 1", len(on))
		}
		owner = on[0]
		return nil
	})
	var others []*mecha
	for _, m := range runtimes {
		if m != owner {
			others = append(others, m)
		}
	}
	pub := others[0]
	clicks := &clickStream{}
	clicks.publish(t, pub, 0, 120)
	// Wait for the first windows and a checkpoint after them, then kill
	// the job's runtime with more clicks in flight.
	eventually(t, 30*time.Second, func() error {
		r := do(t, "GET", pub.url("/v1.0/state/statestore/counts:home:1000"), nil)
		if r.Status != 200 {
			return fmt.Errorf("first windows not in the state store yet: %d", r.Status)
		}
		out, err := exec.Command(bins.mecha, "stream", "--admin", fmt.Sprintf("127.0.0.1:%d", owner.metricsPort), "-o", "json", "status", "counts").CombinedOutput()
		var st struct {
			CheckpointCount int `json:"checkpointCount"`
		}
		if err != nil || json.Unmarshal(out, &st) != nil || st.CheckpointCount == 0 {
			return fmt.Errorf("no checkpoint yet: %v %s", err, out)
		}
		return nil
	})
	clicks.publish(t, pub, 120, 160)
	killed := time.Now()
	if err := owner.proc.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	owner.proc.wait(10 * time.Second)
	var next *mecha
	eventually(t, 30*time.Second, func() error {
		for _, m := range others {
			if runsIt(m) {
				next = m
				return nil
			}
		}
		return fmt.Errorf("no runtime runs the job since the kill")
	})
	next.proc.waitLine(regexp.MustCompile(`stream: resumed from checkpoint.* job=counts`), 30*time.Second)
	t.Logf("the job resumed on another runtime %v after the kill", time.Since(killed).Round(10*time.Millisecond))
	clicks.publish(t, pub, 160, 300)
	clicks.check(t, pub, clicks.distinct())
}
