// Package poll waits for a condition in tests, polling instead of
// sleeping for a fixed time.
package poll

import (
	"testing"
	"time"
)

// Until polls cond every few milliseconds until it holds, and fails the
// test naming what it waited for when timeout passes first.
func Until(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
