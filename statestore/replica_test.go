package statestore

import (
	"fmt"
	"testing"
	"time"
)

// capture is a Replicator that keeps the records a leader logs.
type capture struct{ recs [][]byte }

func (c *capture) Admit(SlotTx, bool) error { return nil }
func (c *capture) Logged(_ int, _ uint64, _ int, rec []byte, _ bool) func() error {
	c.recs = append(c.recs, append([]byte(nil), rec...))
	return nil
}

// A follower's applied record is buffered for the fetch's FlushLog; a
// writer that appends after it and waits for the log must not depend on
// that flush: it commits the batch itself. (It once waited for the
// flusher, which could be waiting for a slot lock that writer held.)
func TestAppliedRecordDoesNotHoldUpWriters(t *testing.T) {
	for _, fsync := range []FsyncPolicy{FsyncInterval, FsyncAlways} {
		t.Run(fmt.Sprint(fsync), func(t *testing.T) {
			leader, err := Open(Options{Dir: t.TempDir(), Fsync: fsync})
			if err != nil {
				t.Fatal(err)
			}
			defer leader.Close()
			c := &capture{}
			leader.SetReplicator(c)
			key := "k"
			if _, err := leader.Set(Write{Key: key, Value: []byte("v")}); err != nil {
				t.Fatal(err)
			}
			follower, err := Open(Options{Dir: t.TempDir(), Fsync: fsync})
			if err != nil {
				t.Fatal(err)
			}
			defer follower.Close()
			follower.WithSlot(SlotOf(key), func(tx SlotTx) {
				if _, err := tx.ApplyRecord(c.recs[0]); err != nil {
					t.Fatal(err)
				}
			})
			other := "other"
			for SlotOf(other) == SlotOf(key) {
				other += "x"
			}
			done := make(chan error, 1)
			go func() { _, err := follower.Set(Write{Key: other, Value: []byte("w")}); done <- err }()
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(10 * time.Second):
				_ = follower.FlushLog() // lets the write and Close finish
				t.Fatal("a write after an applied record waits for the applier's flush")
			}
			if it, ok, _ := follower.Get(key); !ok || string(it.Value) != "v" {
				t.Fatalf("the applied record: %q %v", it.Value, ok)
			}
		})
	}
}
