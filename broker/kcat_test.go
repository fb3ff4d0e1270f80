package broker

import (
	"bytes"
	"context"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
)

// kcat is librdkafka's command line client. CI installs it (apt install
// kcat); the test is skipped only where it is not installed.
func kcatPath(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("kcat")
	if err != nil {
		t.Skip("kcat is not on PATH (apt install kcat): skipping the librdkafka compatibility test")
	}
	return p
}

// runKcat runs kcat with stdin and returns its stdout, failing the test
// with stderr when it exits non-zero.
func runKcat(t *testing.T, kcat, stdin string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, kcat, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("kcat %s: %v\nstderr:\n%s", strings.Join(args, " "), err, errb.String())
	}
	return out.String()
}

func TestKcat(t *testing.T) {
	kcat := kcatPath(t)
	b := startBroker(t, func(c *Config) { c.DefaultPartitions = 3 })
	adm := newAdmin(t, b.Addr())
	const topic = "kcat"
	createTopic(t, adm, topic, 1, nil)

	runKcat(t, kcat, "k1:v1\nk2:v2\nk3:hello world\n", "-b", b.Addr(), "-P", "-t", topic, "-K:")
	want := "k1=v1@0\nk2=v2@1\nk3=hello world@2\n"
	if got := runKcat(t, kcat, "", "-b", b.Addr(), "-C", "-t", topic, "-o", "beginning", "-e", "-q", "-f", "%k=%s@%o\n"); got != want {
		t.Errorf("kcat -C printed\n%q\nwant\n%q", got, want)
	}
	if got := runKcat(t, kcat, "", "-b", b.Addr(), "-C", "-t", topic, "-e", "-q", "-K:"); got != "k1:v1\nk2:v2\nk3:hello world\n" {
		t.Errorf("kcat -C -K: printed %q", got)
	}

	// A group: the first run reads everything and commits; the second
	// resumes after the commit.
	group := []string{"-b", b.Addr(), "-G", "g", "-X", "auto.offset.reset=earliest", "-e", "-q", "-f", "%k=%s\n", topic}
	if got := runKcat(t, kcat, "", group...); got != "k1=v1\nk2=v2\nk3=hello world\n" {
		t.Errorf("kcat -G printed %q, want all three records", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	offs, err := adm.FetchOffsets(ctx, "g")
	if err != nil {
		t.Fatal(err)
	}
	if o, ok := offs.Lookup(topic, 0); !ok || o.At != 3 {
		t.Errorf("group g committed %+v, want offset 3", o)
	}
	runKcat(t, kcat, "k4:v4\n", "-b", b.Addr(), "-P", "-t", topic, "-K:")
	if got := runKcat(t, kcat, "", group...); got != "k4=v4\n" {
		t.Errorf("second kcat -G printed %q, want only the new record", got)
	}

	// An auto-created topic of three partitions: every record once, and
	// records of one key in order.
	var in strings.Builder
	var wantLines []string
	for i := 0; i < 60; i++ {
		line := "key" + string(rune('a'+i%5)) + ":" + strings.Repeat("x", i%7) + string(rune('A'+i%26))
		in.WriteString(line + "\n")
		wantLines = append(wantLines, line)
	}
	runKcat(t, kcat, in.String(), "-b", b.Addr(), "-P", "-t", "auto", "-K:")
	lo, err := adm.ListEndOffsets(ctx, "auto")
	if err != nil {
		t.Fatal(err)
	}
	parts := 0
	lo.Each(func(o kadm.ListedOffset) {
		if o.Offset > 0 {
			parts++
		}
	})
	if parts < 2 {
		t.Errorf("records landed in %d partitions; want keys spread over the three", parts)
	}
	out := runKcat(t, kcat, "", "-b", b.Addr(), "-G", "g2", "-X", "auto.offset.reset=earliest", "-e", "-q", "-K:", "auto")
	gotLines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	perKey := func(lines []string) map[string][]string {
		m := map[string][]string{}
		for _, l := range lines {
			k, v, _ := strings.Cut(l, ":")
			m[k] = append(m[k], v)
		}
		return m
	}
	gk, wk := perKey(gotLines), perKey(wantLines)
	if len(gk) != len(wk) {
		t.Fatalf("kcat -G read keys %v, want %v", gk, wk)
	}
	for k, w := range wk {
		if !slices.Equal(gk[k], w) {
			t.Errorf("key %s: read %v, want %v in this order", k, gk[k], w)
		}
	}
}
