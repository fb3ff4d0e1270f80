// Package controlplane runs the control plane's raft group: one group per
// DC, made of the runtimes with the "server" role, which orders the
// commands of internal/clustermap so that every server applies the same
// sequence and holds the same cluster map. Consensus is go.etcd.io/raft/v3's
// RawNode, driven the way etcd's raftexample drives it: a loop ticks,
// steps messages and proposals, and handles each Ready in order — the hard
// state, entries and snapshot made durable first, then the messages sent,
// then the committed entries applied (clustermap.Apply), then Advance.
// clustermap decides; this package only persists, transports and feeds it.
//
// # What is persisted where
//
// Everything lives in Config.Dir (under the runtime's --data-dir), which a
// running node holds locked (internal/dirlock):
//
//   - raft.wal: an append-only log of records, each
//     size uint32 | CRC-32C uint32 (of type and payload) | type uint8 | payload,
//     big-endian; an entry record holds a raftpb.Entry, a hard-state record
//     a raftpb.HardState (the last one read wins). Each Ready's records are
//     written with one write and one fdatasync before its messages are
//     sent. On start the log is replayed into a raft.MemoryStorage (raft's
//     view); a torn record at its end (cut short, zeros, or a last record
//     whose checksum fails) is cut off, while a bad record before the end is
//     an error wrapping ErrCorrupt that names the file and offset.
//   - raft.snap: the last snapshot, one record holding a raftpb.Snapshot
//     whose data is clustermap.EncodeMap of the map at its index. Every
//     Config.SnapshotEvery applied entries (10,000 by default) the node
//     snapshots, compacts the memory log (keeping 1,000 entries for
//     followers slightly behind) and rewrites raft.wal with what is left;
//     a snapshot received from the leader is stored the same way. Both
//     files are replaced whole with fsutil (write, fsync, rename, directory
//     fsync). A failed write or fsync stops the node (Done, Err): after a
//     failed fsync the file's content is unknown, as the stores hold too.
//   - peers.json: the initial servers (name and address) raft was
//     bootstrapped with, so that a restarted node knows them.
//   - cluster-id: the cluster id, written when Bootstrap is applied.
//
// # Bootstrap
//
// Raft ids are derived from member names (RaftID: FNV-64a, never 0). A
// server whose Dir holds no raft state waits until it knows
// Config.BootstrapExpect servers, itself included (Config.Servers, and
// those the runtime passes to SetServers from gossip), then starts raft
// with the first BootstrapExpect of them by name as its initial peers.
// Every server does the same and so bootstraps with the same peers and the
// same first entries, like Consul's --bootstrap-expect; as with Consul,
// BootstrapExpect must be the same on every server and no more than the
// servers that start first. Once a leader is elected and has applied its
// term's first entry, its controller proposes clustermap.Bootstrap
// (Config.ClusterID, or a new UUID when empty; Config.Replicas,
// Config.RebuildAfter) if the map is not bootstrapped yet; a second
// Bootstrap would be refused by Apply on every server alike.
//
// A server with an empty Dir and BootstrapExpect 0 (or one that is not
// among the first BootstrapExpect by name) joins the running group: it
// starts raft with no peers and waits. Raft's voters follow the map's
// server members: the leader's controller adds a live member with the
// "server" role that is not a voter (ConfChangeAddNode; the leader then
// sends it the log or a snapshot) and removes a server member that left,
// one change per round. The runtime makes a server a member the usual way,
// MemberAlive with clustermap.RoleServer among its roles.
//
// A server whose Dir holds raft state restarts from it (raft's
// RestartNode) and ignores BootstrapExpect. A Dir whose cluster id (the
// cluster-id file, or the snapshot's map) is not Config.ClusterID is
// refused at Start with an error wrapping ErrClusterID that names both.
//
// # Timing
//
// A tick every Config.TickInterval (100 ms); a follower that hears no
// leader for ElectionTick ticks (10: 1 s, randomized by raft up to 2 s)
// campaigns; the leader heartbeats every HeartbeatTick (1) tick. PreVote
// and CheckQuorum are on, so a partitioned leader steps down and a
// returning node does not disturb the group. A leader's loss is repaired
// in 1 to 2 s plus an election round (the tests assert under 3 s). A leader
// that is stopped (Stop) first hands its leadership to its most caught-up
// follower, so a planned restart costs a heartbeat, not an election
// timeout.
//
// # Proposals, the controller, liveness
//
// Propose applies a command: proposed on this node's raft when it leads,
// else forwarded to the leader (MethodPropose); it returns once the
// command is applied on this node, with Apply's refusal (which still
// matches clustermap's sentinel errors with errors.Is) or nil. A forwarded
// proposal whose leader changed is retried on the new one, so in rare
// cases a command may be applied twice; clustermap's commands are fenced
// by epochs and states, so a repeat is refused or changes nothing.
//
// The leader's controller runs every Config.ControllerInterval (1 s),
// and at once whenever it applies entries (a move's next step waits on
// the map change before it):
// Bootstrap if needed, a Tick when a dead member is due to be declared
// gone, then the commands clustermap.Plan returns, all proposed at once
// and waited for together; refusals are ignored, the
// next round plans on the newer map.
//
// MemberAlive and MemberDead turn the failure detector's events into
// MemberJoin, MemberAlive and MemberDead commands; they look at the local
// map first, so an event that changes nothing proposes nothing.
//
// # Transport and methods
//
// Servers talk over muxconn on the internal port; the runtime's muxconn
// handler passes the methods MethodFirst–MethodLast (0x0100–0x01FF) to
// Node.Handle, as it passes statestore/cluster's 0x0200–0x02FF to its
// server:
//
//   - MethodRaft (0x0100): a raftpb.Message. Each peer has a sender
//     goroutine with a queue of 256 messages; a full queue drops the
//     message, and a failed call reports the peer unreachable to raft (and
//     a snapshot as failed), so the raft loop never blocks on the network.
//   - MethodPropose (0x0101): a command for the leader, answered when
//     applied (index, status, refusal).
//   - MethodGetMap (0x0102): a long poll — the caller's version and its
//     wait; the answer is the map as soon as it is newer, or the current
//     one when the wait ends. Client uses it on runtimes that are not
//     servers.
//   - MethodSubmit (0x0103): a command from a runtime that is not a server
//     (Client.Propose); any server takes it and proposes it as
//     Node.Propose does.
//
// Node and Client both offer Map and WaitNewer(ctx, version) error, which
// makes either a statestore/cluster MapSource: Crux routing follows the
// applied map directly.
//
// Transport is the seam: MuxTransport calls muxconn clients with the
// peer token (and the cluster TLS); tests wire nodes in memory.
//
// # Logs
//
// Logs go to Config.Logger with slog; the wiring adds component=controlplane
// (internal/logkeys keeps libraries from tagging themselves). raft's own
// logs go there too, its info lines at debug level.
package controlplane
