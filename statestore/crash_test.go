package statestore

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// crashChildEnv makes TestKillNineChild the writer process that
// TestKillNineLosesNoAcknowledgedWrite kills: "<dir>|<fsync>|<round>".
const crashChildEnv = "CRUX_KILL9_CHILD"

// crashWriters is how many goroutines write at once in the child: enough
// that group commits hold many records and a kill lands inside one.
const crashWriters = 16

// crashKeysPerWriter is how many keys each writer cycles through, so that
// later writes overwrite earlier ones and the newest value must win.
const crashKeysPerWriter = 200

// crashValue is the value of a writer's i-th write in a round; its fixed
// width makes later writes compare greater, by round and then by i.
func crashValue(round, writer, i int) string {
	return fmt.Sprintf("r%d-w%02d-%09d-%s", round, writer, i, strings.Repeat("x", 40+i%64))
}

// crashNewer reports whether got is want or a later write of the same
// writer.
func crashNewer(got, want string) bool {
	const writer = len("r0-") // where "wNN" starts
	return len(got) > writer+3 && got[writer:writer+3] == want[writer:writer+3] && got >= want
}

func crashKey(writer, i int) string {
	return fmt.Sprintf("w%02d-k%03d", writer, i%crashKeysPerWriter)
}

// TestKillNineLosesNoAcknowledgedWrite starts a child process that writes
// with 16 goroutines and prints every write the store acknowledged, kills
// it with SIGKILL in the middle of the load, reopens the store and checks
// that every acknowledged write is there (or a later write of the same
// key by the same writer). A process crash must lose nothing under every
// fsync policy: only a machine crash may lose the last interval. Two
// rounds per policy, so that the second one writes into a store that
// recovered from a kill.
func TestKillNineLosesNoAcknowledgedWrite(t *testing.T) {
	if testing.Short() {
		t.Skip("starts child processes")
	}
	cases := []struct {
		policy FsyncPolicy
		// acks is how many acknowledgements the test waits for before
		// it kills the child: about a fifth of a second of load.
		acks int
	}{
		{FsyncAlways, 3_000},
		{FsyncInterval, 20_000},
		{FsyncNever, 20_000},
	}
	for _, tc := range cases {
		t.Run(tc.policy.String(), func(t *testing.T) {
			dir := t.TempDir()
			// acked holds the newest acknowledged value of each key.
			acked := map[string]string{}
			for round := 1; round <= 2; round++ {
				n := killChildMidLoad(t, dir, tc.policy, round, tc.acks, acked)
				e := open(t, dir, func(o *Options) { o.Fsync = tc.policy })
				lost := 0
				for k, want := range acked {
					it, ok, err := e.Get(k)
					if err != nil {
						t.Fatal(err)
					}
					// A write acknowledged after the last line the child
					// managed to print may have overwritten the key.
					if !ok || !crashNewer(string(it.Value), want) {
						if lost < 5 {
							t.Errorf("round %d: key %s = %.30q (present %v), acknowledged %.30q", round, k, it.Value, ok, want)
						}
						lost++
					}
				}
				if lost > 0 {
					t.Errorf("round %d: %d of %d acknowledged keys lost or stale after kill -9 (%d acknowledgements read)", round, lost, len(acked), n)
				}
				if err := e.Close(); err != nil {
					t.Fatal(err)
				}
				if t.Failed() {
					return
				}
			}
		})
	}
}

// killChildMidLoad runs the writer child on dir, kills it with SIGKILL
// once it has acknowledged at least acks writes, reads every line it
// printed before dying into acked and returns how many it read.
func killChildMidLoad(t *testing.T, dir string, policy FsyncPolicy, round, acks int, acked map[string]string) int {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestKillNineChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s|%s|%d", crashChildEnv, dir, policy, round))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// A child that hangs is killed too, so the test fails instead of
	// waiting for the test binary's timeout.
	guard := time.AfterFunc(2*time.Minute, func() { _ = cmd.Process.Kill() })
	defer guard.Stop()
	killed := false
	n := 0
	r := bufio.NewReader(out)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			// EOF: the child is dead and every line it wrote is read.
			// A line without its newline was not written whole (each
			// line is one write(2) to a pipe, so that cannot happen).
			break
		}
		rest, ok := strings.CutPrefix(strings.TrimSuffix(line, "\n"), "ack ")
		if !ok {
			continue // the test framework's own output
		}
		k, v, _ := strings.Cut(rest, " ")
		acked[k] = v
		n++
		if n == acks && !killed {
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			killed = true
		}
	}
	err = cmd.Wait()
	if !killed {
		t.Fatalf("round %d: the child stopped after %d of %d acknowledgements: %v\n%s", round, n, acks, err, stderr.String())
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("round %d: the child did not die of SIGKILL: %v\n%s", round, err, stderr.String())
	}
	return n
}

// TestKillNineChild is the writer process of
// TestKillNineLosesNoAcknowledgedWrite; it only runs in a child started
// with crashChildEnv set, and writes until it is killed.
func TestKillNineChild(t *testing.T) {
	spec := os.Getenv(crashChildEnv)
	if spec == "" {
		t.Skip("the child process of TestKillNineLosesNoAcknowledgedWrite")
	}
	parts := strings.Split(spec, "|")
	if len(parts) != 3 {
		t.Fatalf("bad %s %q", crashChildEnv, spec)
	}
	policy, err := ParseFsyncPolicy(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	round, err := strconv.Atoi(parts[2])
	if err != nil {
		t.Fatal(err)
	}
	// Small segments and snapshot threshold, so that rotations and
	// snapshots run during the load and a kill can land in them too.
	e, err := Open(Options{Dir: parts[0], Fsync: policy, Logger: quiet(), SegmentBytes: 1 << 20, SnapshotLogBytes: 2 << 20})
	if err != nil {
		t.Fatal(err)
	}
	var acks atomic.Int64
	snap := make(chan struct{}, 1)
	go func() {
		for range snap {
			if err := e.Snapshot(); err != nil {
				fmt.Fprintln(os.Stderr, "snapshot:", err)
			}
		}
	}()
	// ack prints acknowledged writes as one write(2) to the pipe, which
	// is atomic: the parent never reads half a line.
	ack := func(lines string) {
		if _, err := io.WriteString(os.Stdout, lines); err != nil {
			os.Exit(3)
		}
		if acks.Add(1)%5_000 == 0 {
			select {
			case snap <- struct{}{}:
			default:
			}
		}
	}
	var wg sync.WaitGroup
	for w := 0; w < crashWriters; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				k, v := crashKey(w, i), crashValue(round, w, i)
				if i%8 == 7 {
					// A transaction of two keys of this writer: both
					// are acknowledged together.
					i++
					k2, v2 := crashKey(w, i), crashValue(round, w, i)
					if _, err := e.Apply([]Write{{Key: k, Value: []byte(v)}, {Key: k2, Value: []byte(v2)}}); err != nil {
						fmt.Fprintln(os.Stderr, "apply:", err)
						os.Exit(2)
					}
					ack("ack " + k + " " + v + "\nack " + k2 + " " + v2 + "\n")
					continue
				}
				if _, err := e.Set(Write{Key: k, Value: []byte(v)}); err != nil {
					fmt.Fprintln(os.Stderr, "set:", err)
					os.Exit(2)
				}
				ack("ack " + k + " " + v + "\n")
			}
		}()
	}
	wg.Wait()
}
