// Package brokertest starts an in-process broker for tests of the
// packages built on it (pubsub.mecha, bindings.mecha, components).
package brokertest

import (
	"testing"
	"time"

	"mecha/broker"
)

// Start runs a broker on 127.0.0.1 with a free port and a temporary data
// dir, with 3 partitions per auto-created topic and short group session
// bounds, and closes it when the test ends. It returns the address.
func Start(t testing.TB) string {
	t.Helper()
	cfg := broker.DefaultConfig()
	cfg.Addr = "127.0.0.1:0"
	cfg.DataDir = t.TempDir()
	cfg.DefaultPartitions = 3
	cfg.MinSessionTimeout = 100 * time.Millisecond
	b, err := broker.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b.Addr()
}
