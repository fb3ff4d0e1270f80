package broker

import (
	"bufio"
	"context"
	"io"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"mecha/internal/poll"
)

// brokerProc is a `mecha broker` process.
type brokerProc struct {
	cmd  *exec.Cmd
	addr string
	done chan struct{}

	mu    sync.Mutex
	lines []string
}

var listeningRe = regexp.MustCompile(`msg="broker listening" addr=(\S+)`)

// startBrokerProc starts `mecha broker --port 0 --data-dir dir` and waits
// for its listening line; the process is killed when the test ends.
func startBrokerProc(t *testing.T, bin, dir string, extra ...string) *brokerProc {
	t.Helper()
	args := append([]string{"broker", "--port", "0", "--data-dir", dir}, extra...)
	p := &brokerProc{cmd: exec.Command(bin, args...), done: make(chan struct{})}
	pr, pw := io.Pipe()
	p.cmd.Stdout, p.cmd.Stderr = pw, pw
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.lines = append(p.lines, sc.Text())
			p.mu.Unlock()
		}
	}()
	go func() {
		_ = p.cmd.Wait()
		pw.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("broker output:\n%s", p.output())
		}
	})
	poll.Until(t, waitLong, "the broker's listening line", func() bool {
		select {
		case <-p.done:
			t.Fatalf("mecha broker exited:\n%s", p.output())
		default:
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, l := range p.lines {
			if m := listeningRe.FindStringSubmatch(l); m != nil {
				p.addr = m[1]
				return true
			}
		}
		return false
	})
	// Ready when it answers a request.
	poll.Until(t, waitLong, "the broker to answer", func() bool {
		cl, err := kgo.NewClient(kgo.SeedBrokers(p.addr))
		if err != nil {
			return false
		}
		defer cl.Close()
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		return cl.Ping(ctx) == nil
	})
	return p
}

// kill sends SIGKILL: no close, no final fsync.
func (p *brokerProc) kill() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}

func (p *brokerProc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.lines, "\n")
}

// Records acknowledged with acks=all survive kill -9 of the broker
// process: a restart on the same data directory serves exactly them, in
// order per partition, and the group offsets committed before the kill.
// With the default fsync interval this holds because the page cache
// outlives the process; with --fsync always each acknowledgement waited
// for the disk.
func TestDurabilityKill9(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "mecha")
	build := exec.Command("go", "build", "-o", bin, "mecha/cmd/mecha")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build mecha/cmd/mecha: %v\n%s", err, out)
	}
	for _, tc := range []struct {
		name  string
		flags []string
	}{
		{"fsync interval", nil},
		{"fsync always", []string{"--fsync", "always"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			p := startBrokerProc(t, bin, dir, tc.flags...)
			ctx, cancel := context.WithTimeout(context.Background(), waitLong)
			defer cancel()
			const topic, parts, n = "durable", 4, 5000
			adm := newAdmin(t, p.addr)
			createTopic(t, adm, topic, parts, nil)

			// acked[p][o] is the value the producer was told sits at
			// partition p, offset o.
			var mu sync.Mutex
			acked := map[int32]map[int64]string{}
			prod := newKgo(t, p.addr, kgo.DefaultProduceTopic(topic), kgo.RequiredAcks(kgo.AllISRAcks()))
			for i := 0; i < n; i++ {
				prod.Produce(ctx, &kgo.Record{Key: []byte(strconv.Itoa(i % 16)), Value: []byte(strconv.Itoa(i))}, func(r *kgo.Record, err error) {
					if err != nil {
						t.Errorf("produce %s: %v", r.Value, err)
						return
					}
					mu.Lock()
					defer mu.Unlock()
					if acked[r.Partition] == nil {
						acked[r.Partition] = map[int64]string{}
					}
					acked[r.Partition][r.Offset] = string(r.Value)
				})
			}
			if err := prod.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			total := 0
			for _, m := range acked {
				total += len(m)
			}
			if total != n {
				t.Fatalf("%d of %d records acknowledged", total, n)
			}
			commit := kadm.Offsets{}
			commit.AddOffset(topic, 0, 42, -1)
			if resp, err := adm.CommitOffsets(ctx, "durable-group", commit); err != nil || resp.Error() != nil {
				t.Fatalf("commit offsets: %v %v", err, resp.Error())
			}
			prod.Close()

			p.kill()
			p2 := startBrokerProc(t, bin, dir, tc.flags...)
			adm2 := newAdmin(t, p2.addr)
			ends := endOffsets(t, adm2, topic)
			for part := int32(0); part < parts; part++ {
				if ends[part] != int64(len(acked[part])) {
					t.Errorf("partition %d ends at %d after the restart; %d records were acknowledged there", part, ends[part], len(acked[part]))
				}
			}
			cons := newKgo(t, p2.addr, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
			got := map[int32][]*kgo.Record{}
			for read := 0; read < n; {
				fs := cons.PollFetches(ctx)
				if ctx.Err() != nil {
					t.Fatalf("read %d of %d acknowledged records after the restart", read, n)
				}
				fs.EachError(func(tp string, p int32, err error) { t.Fatalf("fetch %s/%d: %v", tp, p, err) })
				fs.EachRecord(func(r *kgo.Record) {
					got[r.Partition] = append(got[r.Partition], r)
					read++
				})
			}
			for part, recs := range got {
				for i, r := range recs {
					if r.Offset != int64(i) || acked[part][r.Offset] != string(r.Value) {
						t.Fatalf("partition %d: record %d is %q at offset %d; the producer was told %q is there",
							part, i, r.Value, r.Offset, acked[part][int64(i)])
					}
				}
			}
			offs, err := adm2.FetchOffsets(ctx, "durable-group")
			if err != nil {
				t.Fatal(err)
			}
			if o, ok := offs.Lookup(topic, 0); !ok || o.At != 42 {
				t.Errorf("committed offset after the restart: %+v, want 42", o)
			}
		})
	}
}
