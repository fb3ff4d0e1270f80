package job

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"mecha/broker"
	"mecha/broker/brokertest"
	"mecha/internal/poll"
)

// TestCheckpointResumeExactState stops a job mid-stream (no checkpoint at
// stop, as in a crash), starts a new runner on the same data dir, and
// checks that the state sink ends exactly as one uninterrupted run would
// leave it: the replay after the last checkpoint rewrites the same values.
func TestCheckpointResumeExactState(t *testing.T) {
	eachWay(t, func(t *testing.T, addr string, local broker.Local) {
		ctx := context.Background()
		cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.RecordPartitioner(kgo.ManualPartitioner()))
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		if _, err := kadm.NewClient(cl).CreateTopic(ctx, 2, 1, nil, "clicks"); err != nil {
			t.Fatal(err)
		}
		doc := `{"apiVersion":"mecha.io/v1alpha1","kind":"StreamJob","metadata":{"name":"uvjob"},
		 "spec":{"source":{"topic":"clicks","eventTimeField":"ts"},"keyBy":"page",
		  "window":{"type":"tumbling","size":"1s"},"aggregate":{"type":"countDistinct","field":"user"},
		  "sink":{"type":"state"},"checkpoint":{"interval":"20ms"}}}`
		spec, err := ParseDocument([]byte(doc))
		if err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		state := map[string]string{}
		save := func(_ context.Context, _ string, es []StateEntry) error {
			mu.Lock()
			defer mu.Unlock()
			for _, e := range es {
				state[e.Key] = string(e.Value)
			}
			return nil
		}
		dataDir := t.TempDir()
		start := func() (*Runner, func()) {
			r, err := New(spec, Options{Brokers: addr, Broker: local, DataDir: dataDir, SaveState: save})
			if err != nil {
				t.Fatal(err)
			}
			rctx, cancel := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() { done <- r.Run(rctx) }()
			return r, func() {
				cancel()
				if err := <-done; err != nil {
					t.Fatal(err)
				}
			}
		}

		// Reference: distinct users per page per second.
		ref := map[string]map[string]bool{}
		var recs []*kgo.Record
		pages := []string{"home", "cart", "search"}
		for i := 0; i < 3000; i++ {
			page, user, ts := pages[i%3], fmt.Sprintf("u%d", (i*7)%101), int64(i)*5
			k := fmt.Sprintf("uvjob:%s:%d", page, ts/1000*1000)
			if ref[k] == nil {
				ref[k] = map[string]bool{}
			}
			ref[k][user] = true
			recs = append(recs, &kgo.Record{Topic: "clicks", Partition: int32(i % 2),
				Value: []byte(fmt.Sprintf(`{"page":%q,"user":%q,"ts":%d}`, page, user, ts))})
		}
		// One late-enough event per partition closes every window.
		for p := int32(0); p < 2; p++ {
			recs = append(recs, &kgo.Record{Topic: "clicks", Partition: p, Value: []byte(`{"page":"end","user":"x","ts":100000}`)})
		}

		a, stopA := start()
		if err := cl.ProduceSync(ctx, recs[:1500]...).FirstErr(); err != nil {
			t.Fatal(err)
		}
		// A checkpoint counted when In reached 1,500 may have been taken
		// before the last records were in (the old wait, Checkpoints >= 2
		// and In == 1500, let one through under load: the second run then
		// read more than 1,500 again and the exact count below never
		// came). Two more checkpoints after In reached 1,500: the second
		// of them started after it.
		poll.Until(t, 20*time.Second, "the first run to read the first 1,500 records", func() bool { return a.Counts().In == 1500 })
		after := a.Counts().Checkpoints
		poll.Until(t, 20*time.Second, "two checkpoints after the first 1,500 records", func() bool { return a.Counts().Checkpoints >= after+2 })
		// Keep that checkpoint: put back after the run below, it stands for
		// a crash after results were delivered but before the next
		// checkpoint was written.
		cpPath := filepath.Join(dataDir, "uvjob", "checkpoint.json")
		saved, err := os.ReadFile(cpPath)
		if err != nil {
			t.Fatal(err)
		}
		if err := cl.ProduceSync(ctx, recs[1500:2500]...).FirstErr(); err != nil {
			t.Fatal(err)
		}
		poll.Until(t, 20*time.Second, "the first run to process 2,500 records", func() bool { return a.Counts().In == 2500 })
		stopA()
		if err := os.WriteFile(cpPath, saved, 0o644); err != nil {
			t.Fatal(err)
		}

		b, stopB := start()
		defer stopB()
		if err := cl.ProduceSync(ctx, recs[2500:]...).FirstErr(); err != nil {
			t.Fatal(err)
		}
		poll.Until(t, 20*time.Second, "every window in the state sink", func() bool {
			mu.Lock()
			defer mu.Unlock()
			for k, users := range ref {
				if !strings.Contains(state[k], fmt.Sprintf(`"value":%d`, len(users))) {
					return false
				}
			}
			return true
		})
		if !b.Counts().Restored {
			t.Fatal("the second run did not resume from the checkpoint")
		}
		// It replayed from record 1,500 on: 1,000 again, then the rest.
		poll.Until(t, 10*time.Second, "the second run to read from the checkpoint to the end", func() bool {
			return b.Counts().In >= int64(len(recs)-1500)
		})
		if in := b.Counts().In; in != int64(len(recs)-1500) {
			t.Fatalf("the second run read %d records, want %d: from the checkpoint to the end", in, len(recs)-1500)
		}
		mu.Lock()
		defer mu.Unlock()
		for k := range state {
			if _, ok := ref[k]; !ok && !strings.HasPrefix(k, "uvjob:end:") {
				t.Errorf("unexpected state key %s", k)
			}
		}
	})
}

// memCheckpoints is a CheckpointStore in memory that can be told another
// runner took the job over.
type memCheckpoints struct {
	mu     sync.Mutex
	b      []byte
	saves  int
	stolen bool
}

func (m *memCheckpoints) Load(context.Context) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.b, nil
}

func (m *memCheckpoints) Save(_ context.Context, b []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.stolen {
		return fmt.Errorf("etag mismatch: %w", ErrSuperseded)
	}
	m.b, m.saves = append([]byte(nil), b...), m.saves+1
	return nil
}

func (m *memCheckpoints) Where() string { return "memory" }

// A job keeps its checkpoints where Options.Checkpoints says, resumes from
// them there, and stops when the store says another runner saved since
// (the job moved to another runtime).
func TestCheckpointStoreAndSuperseded(t *testing.T) {
	b := brokertest.StartBroker(t)
	spec := Spec{Name: "moving", Source: Source{Topic: "in"}, Sink: Sink{Type: "topic", Topic: "out"},
		Checkpoint: Checkpoint{Interval: Duration{Duration: 10 * time.Millisecond}}}
	store := &memCheckpoints{}
	r, err := New(spec, Options{Broker: b, Checkpoints: store})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- r.Run(context.Background()) }()
	poll.Until(t, 10*time.Second, "a checkpoint in the store", func() bool {
		store.mu.Lock()
		defer store.mu.Unlock()
		return store.saves > 0 && strings.Contains(string(store.b), `"job":"moving"`)
	})
	store.mu.Lock()
	store.stolen = true
	store.mu.Unlock()
	select {
	case err := <-done:
		if !errors.Is(err, ErrSuperseded) {
			t.Fatalf("Run ended with %v, want ErrSuperseded", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the superseded job runs on")
	}
	// A new runner resumes from the store.
	store.stolen = false
	r2, err := New(spec, Options{Broker: b, Checkpoints: store})
	if err != nil {
		t.Fatal(err)
	}
	if err := r2.restore(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !r2.Counts().Restored {
		t.Fatal("the new runner did not restore the stored checkpoint")
	}
}
