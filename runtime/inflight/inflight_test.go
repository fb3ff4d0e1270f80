package inflight

import (
	"context"
	"sync"
	"testing"
	"time"
)

func TestCloseWaitsForWork(t *testing.T) {
	var tr Tracker
	if !tr.Enter() {
		t.Fatal("Enter refused before Close")
	}
	closed := make(chan bool)
	go func() { closed <- tr.Close(context.Background()) }()
	// Close must refuse new work while it waits.
	deadline := time.Now().Add(5 * time.Second)
	for tr.Enter() {
		tr.Leave()
		if time.Now().After(deadline) {
			t.Fatal("Enter still accepted after Close started")
		}
		time.Sleep(time.Millisecond)
	}
	select {
	case <-closed:
		t.Fatal("Close returned with work under way")
	default:
	}
	tr.Leave()
	if ok := <-closed; !ok {
		t.Fatal("Close reported unfinished work")
	}
}

func TestCloseHonoursDeadline(t *testing.T) {
	var tr Tracker
	tr.Enter()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if tr.Close(ctx) {
		t.Fatal("Close reported done with work under way")
	}
}

func TestConcurrentEnterAndClose(t *testing.T) {
	for i := 0; i < 50; i++ {
		var tr Tracker
		var wg sync.WaitGroup
		for g := 0; g < 8; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for tr.Enter() {
					tr.Leave()
				}
			}()
		}
		if !tr.Close(context.Background()) {
			t.Fatal("Close did not finish")
		}
		wg.Wait()
	}
}
