// Package clustermap is the deciding core of mecha's control plane: the
// cluster map and the pure, deterministic state machine that changes it.
//
// # The map
//
// A Map holds what every runtime must agree on:
//
//   - the cluster id and settings (slot replication factor, how long a
//     dead member may stay before its replicas are rebuilt), fixed at
//     Bootstrap;
//   - the members: address, DC, roles ("data" members hold replicas,
//     "server" members vote in the control plane), state (alive, dead
//     since T, gone, left) and a draining flag;
//   - the NumSlots (1024) Crux slots (Slot maps a key to one) and every
//     broker topic's partitions. Each of these groups has ordered
//     replicas (the first is the preferred leader), a leader, a leader
//     epoch, an in-sync set and at most one move in progress;
//   - per-topic replication settings: replication factor,
//     min.insync.replicas, unclean leader election (off by default).
//
// A Version counts the applied commands that changed something.
//
// # Who decides what
//
// Raft (go.etcd.io/raft/v3, wired outside this package) only orders
// commands: every runtime of the control plane applies the same
// sequence with Apply and so holds the same map. Apply has no clock, no
// randomness, no I/O and no goroutines; time comes in commands (MemberDead
// carries when, Tick carries now). A refused command changes nothing
// and says why (a stale epoch, an unknown member, a bad assignment);
// since every replica refuses it alike, a refusal needs no agreement.
//
// Apply decides what must be instant and the same everywhere: when a
// member dies, each group it led elects the first live in-sync replica
// (epoch+1), never an out-of-sync one unless the topic allows unclean
// election; with no such replica the group is leaderless (its epoch
// still goes up, fencing the old leader) and keeps the dead leader as
// its last in-sync member, so that its return brings the group back.
// The dead member leaves every other in-sync set.
//
// Plan decides what can wait and be paced: it reads a map and returns
// commands for the controller leader to propose — the slots' first
// assignment (Spread), preferred leader elections, leaderships off
// draining members, replicas rebuilt for members gone longer than
// RebuildAfter or departed, growth to the replication factor, and
// balance within 10% of the mean (or 1), with at most MaxMoves moves
// in flight. Plan is pure too, so a new controller leader picks up
// where the old one stopped; a plan made on a map that changed since
// is partly refused, and the next plan retries.
//
// The replicas do the rest and report it: a leader tells the in-sync set
// it sees (ISRChange, fenced by its epoch); a new replica says when its
// snapshot copy is done (MoveProgress to tailing). A move then goes:
// MoveStart (the new replica joins out of sync and copies from the
// leader), tailing, in sync (the leader's ISRChange), switching (the new
// replica takes the old one's place in the order and, if the old one
// led, the leadership with epoch+1), MoveDone (the old replica is
// dropped). A move whose new replica dies or starts draining is aborted
// and planned again.
//
// # What is not here
//
// Replication itself (fetching, high watermark, truncation), routing
// and the transport belong to the stores and the runtime; the failure
// detector (memberlist) feeds MemberDead and MemberAlive; raft's own
// membership follows the "server" role outside this package.
//
// # Determinism and versions
//
// The map is a function of the command log and of this package's code.
// A change to Apply's rules is a change to the protocol: runtimes of two
// versions applying the same log must not disagree, so such a change
// needs a new command kind or a new format version, never a silent
// behaviour change. Encode and Decode are strict for the same reason.
package clustermap
