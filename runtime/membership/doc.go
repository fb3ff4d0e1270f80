// Package membership is the cluster's membership and app catalog, on
// hashicorp/memberlist gossip.
//
// Each data center is one LAN pool, tuned to declare a crashed node dead
// within a few seconds. Gateway nodes (--gateway) also join a WAN pool
// that spans the data centers. Every node publishes a compact Meta (DC,
// region, roles, ports, and the version of its catalog entry) in its
// memberlist meta, and its NodeEntry (address, internal port, the
// app-ids it hosts and their health) through gossip broadcasts, with
// push/pull as the backstop and a direct request when a peer's meta
// announces an entry the node did not receive.
//
// Gateways publish their DC's entries as a DCView on the WAN and relay
// the other DCs' views into their LAN, so every node resolves apps in
// every DC: a remote instance names the gateways that front it.
//
// The Catalog is a plain state machine fed events (members joining and
// leaving, entries and views received, ticks); Node wires it to
// memberlist and owns the goroutines. The catalog is cached on disk and
// served, marked stale, while gossip cannot confirm it.
package membership
