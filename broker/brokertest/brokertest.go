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
	return StartBroker(t).Addr()
}

// StartBroker is Start returning the broker, for components that call it
// in-process; mutate changes the configuration first.
func StartBroker(t testing.TB, mutate ...func(*broker.Config)) *broker.Broker {
	t.Helper()
	cfg := broker.DefaultConfig()
	cfg.Addr = "127.0.0.1:0"
	cfg.DataDir = t.TempDir()
	cfg.DefaultPartitions = 3
	cfg.MinSessionTimeout = 100 * time.Millisecond
	for _, m := range mutate {
		m(&cfg)
	}
	b, err := broker.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// EachWay runs test twice, each time against a new broker (StartBroker):
// with local true, for a component given the broker to call in-process
// (as mecha run gives it), then with local false, for one reaching it by
// address over the network. A component must behave the same both ways.
func EachWay(t *testing.T, test func(t *testing.T, b *broker.Broker, local bool)) {
	t.Helper()
	for _, local := range []bool{true, false} {
		name := "network"
		if local {
			name = "in-process"
		}
		t.Run(name, func(t *testing.T) { test(t, StartBroker(t), local) })
	}
}
