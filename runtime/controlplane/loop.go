package controlplane

import (
	"context"
	"encoding/binary"
	"fmt"
	"path/filepath"
	"slices"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"

	"mecha/internal/clustermap"
	"mecha/internal/fsutil"
)

// setConf records the raft configuration (loop only); Voters reads it.
func (n *Node) setConf(cs raftpb.ConfState) {
	n.confState = cs
	v := slices.Clone(cs.Voters)
	n.voters.Store(&v)
}

// run is the raft loop: it ticks, steps messages and proposals, and
// handles every Ready (persist, send, apply, advance).
func (n *Node) run(rn *raft.RawNode) {
	defer n.wg.Done()
	defer func() {
		n.failPending(ErrStopped)
		n.leader.Store(0)
		n.leaderReady.Store(false)
	}()
	t := time.NewTicker(n.cfg.TickInterval)
	defer t.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
			rn.Tick()
		case m := <-n.recvc:
			_ = rn.Step(m)
			// Step what else arrived before persisting: one fsync for
			// the batch.
			for range cap(n.recvc) {
				select {
				case m := <-n.recvc:
					_ = rn.Step(m)
					continue
				default:
				}
				break
			}
		case <-n.transferc:
			n.transfer(rn)
		case p := <-n.propc:
			n.propose(rn, p)
		case r := <-n.reportc:
			if r.snap {
				st := raft.SnapshotFinish
				if !r.ok {
					st = raft.SnapshotFailure
				}
				rn.ReportSnapshot(r.id, st)
			} else {
				rn.ReportUnreachable(r.id)
			}
		}
		for rn.HasReady() {
			if err := n.ready(rn); err != nil {
				n.fail(err)
				return
			}
		}
	}
}

// transfer hands the leadership to the follower whose log matches the
// most of the leader's.
func (n *Node) transfer(rn *raft.RawNode) {
	st := rn.Status()
	if st.RaftState != raft.StateLeader {
		return
	}
	var to, match uint64
	for id, pr := range st.Progress {
		if id != n.id && pr.Match >= match {
			to, match = id, pr.Match
		}
	}
	if to != 0 {
		n.log.Info("raft leadership transfer", "to", n.nameOf(to))
		rn.TransferLeader(to)
	}
}

func (n *Node) nameOf(id uint64) string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.names[id]
}

func (n *Node) propose(rn *raft.RawNode, p *proposal) {
	if rn.BasicStatus().RaftState != raft.StateLeader {
		p.done <- result{err: ErrNotLeader}
		return
	}
	var err error
	if p.cc != nil {
		p.cc.Context = binary.BigEndian.AppendUint64(nil, p.id)
		err = rn.ProposeConfChange(*p.cc)
	} else {
		err = rn.Propose(p.data)
	}
	if err != nil {
		p.done <- result{err: fmt.Errorf("controlplane: propose: %w", err)}
		return
	}
	n.pending[p.id] = p
}

func (n *Node) failPending(err error) {
	for id, p := range n.pending {
		p.done <- result{err: err}
		delete(n.pending, id)
	}
}

func (n *Node) ready(rn *raft.RawNode) error {
	rd := rn.Ready()
	if rd.SoftState != nil {
		was := n.leader.Load() == n.id
		n.leader.Store(rd.SoftState.Lead)
		isLeader := rd.SoftState.RaftState == raft.StateLeader
		if was && !isLeader {
			n.failPending(ErrLeaderChanged)
			n.leaderReady.Store(false)
		}
		if isLeader && !was {
			// Its term's first entry (raft appends an empty one) is
			// in rd.Entries: once applied, the map is up to date.
			n.leaderStart = 0
			for _, e := range rd.Entries {
				n.leaderStart = max(n.leaderStart, e.Index)
			}
			if n.leaderStart == 0 {
				n.leaderStart, _ = n.st.ms.LastIndex()
			}
			n.log.Info("raft leader", "term", rn.BasicStatus().Term)
		}
	}
	if !raft.IsEmptySnap(rd.Snapshot) {
		m, err := clustermap.DecodeMap(rd.Snapshot.Data)
		if err != nil {
			return fmt.Errorf("controlplane: snapshot from the leader: %w", err)
		}
		if err := n.st.saveSnapshot(rd.Snapshot); err != nil {
			return err
		}
		n.cur, n.applied, n.snapIndex = m, rd.Snapshot.Metadata.Index, rd.Snapshot.Metadata.Index
		n.setConf(rd.Snapshot.Metadata.ConfState)
		n.onMap(m)
	}
	if err := n.st.save(rd.HardState, rd.Entries); err != nil {
		return err
	}
	if !raft.IsEmptyHardState(rd.HardState) {
		n.term.Store(rd.HardState.Term)
		n.commit.Store(rd.HardState.Commit)
	}
	var unreachable []raftpb.Message
	for _, m := range rd.Messages {
		if !n.send(m) {
			unreachable = append(unreachable, m)
		}
	}
	for i := range rd.CommittedEntries {
		if err := n.apply(rn, &rd.CommittedEntries[i]); err != nil {
			return err
		}
	}
	n.maps.setApplied(n.cur, n.applied)
	if n.applied-n.snapIndex >= n.cfg.SnapshotEvery {
		data, err := clustermap.EncodeMap(n.cur)
		if err != nil {
			return err
		}
		if err := n.st.compact(n.applied, n.confState, data, snapshotKeep); err != nil {
			return err
		}
		n.snapIndex = n.applied
		n.log.Debug("raft snapshot", "index", n.applied)
	}
	rn.Advance(rd)
	for _, m := range unreachable {
		rn.ReportUnreachable(m.To)
		if m.Type == raftpb.MsgSnap {
			rn.ReportSnapshot(m.To, raft.SnapshotFailure)
		}
	}
	ready := n.leader.Load() == n.id && n.applied >= n.leaderStart
	if ready && (!n.leaderReady.Load() || len(rd.CommittedEntries) > 0) {
		// The controller plans at once on a new leadership and on every
		// change of the map (a move's next step waits on the last one),
		// besides its tick.
		n.leaderReady.Store(true)
		select {
		case n.kick <- struct{}{}:
		default:
		}
	}
	return nil
}

// send queues m for its peer's sender; false when the queue is full.
func (n *Node) send(m raftpb.Message) bool {
	q := n.senders[m.To]
	if q == nil {
		q = make(chan raftpb.Message, peerQueue)
		n.senders[m.To] = q
		n.wg.Add(1)
		go n.sender(m.To, q)
	}
	select {
	case q <- m:
		return true
	default:
		return false
	}
}

// sender sends one peer's raft messages in order.
func (n *Node) sender(to uint64, q chan raftpb.Message) {
	defer n.wg.Done()
	timeout := n.cfg.TickInterval * time.Duration(n.cfg.ElectionTick)
	for {
		var m raftpb.Message
		select {
		case <-n.ctx.Done():
			return
		case m = <-q:
		}
		err := ErrStopped
		if addr := n.addrOf(to); addr != "" {
			var b []byte
			if b, err = m.Marshal(); err == nil {
				ctx, cancel := context.WithTimeout(n.ctx, timeout)
				_, err = n.cfg.Transport.Call(ctx, addr, MethodRaft, b)
				cancel()
			}
		}
		var r []report
		if err != nil {
			r = append(r, report{id: to})
		}
		if m.Type == raftpb.MsgSnap {
			r = append(r, report{id: to, snap: true, ok: err == nil})
		}
		for _, r := range r {
			select {
			case n.reportc <- r:
			default:
			}
		}
	}
}

// apply applies one committed entry.
func (n *Node) apply(rn *raft.RawNode, e *raftpb.Entry) error {
	n.applied = e.Index
	switch e.Type {
	case raftpb.EntryConfChange:
		var cc raftpb.ConfChange
		if err := cc.Unmarshal(e.Data); err != nil {
			return fmt.Errorf("controlplane: entry %d: %w", e.Index, err)
		}
		n.setConf(*rn.ApplyConfChange(cc))
		n.log.Info("raft configuration changed", "change", cc.Type.String(), "server", n.nameOf(cc.NodeID), "voters", len(n.confState.Voters))
		if len(cc.Context) == 8 {
			if p := n.pending[binary.BigEndian.Uint64(cc.Context)]; p != nil {
				delete(n.pending, p.id)
				p.done <- result{index: e.Index}
			}
		}
		return nil
	case raftpb.EntryConfChangeV2:
		var cc raftpb.ConfChangeV2
		if err := cc.Unmarshal(e.Data); err != nil {
			return fmt.Errorf("controlplane: entry %d: %w", e.Index, err)
		}
		n.setConf(*rn.ApplyConfChange(cc))
		return nil
	}
	if len(e.Data) == 0 {
		return nil
	}
	var err error
	var id uint64
	if len(e.Data) < 8 {
		err = fmt.Errorf("%w: entry %d too short", clustermap.ErrBadCommand, e.Index)
	} else {
		id = binary.BigEndian.Uint64(e.Data)
		var c clustermap.Command
		if c, err = clustermap.Decode(e.Data[8:]); err == nil {
			var m *clustermap.Map
			m, err = clustermap.Apply(n.cur, c)
			if err == nil && m != n.cur {
				n.cur = m
				if b, ok := c.(clustermap.Bootstrap); ok {
					n.onBootstrap(b.ClusterID)
				}
				n.onMap(m)
			}
		}
	}
	if err != nil {
		n.log.Debug("command refused", "index", e.Index, "err", err)
	}
	if p := n.pending[id]; p != nil {
		delete(n.pending, id)
		p.done <- result{index: e.Index, err: err}
	}
	return nil
}

// onBootstrap records the cluster id in Dir.
func (n *Node) onBootstrap(clusterID string) {
	if n.cfg.ClusterID != "" && clusterID != n.cfg.ClusterID {
		n.log.Error("raft group bootstrapped with another cluster id", "cluster_id", clusterID, "expected", n.cfg.ClusterID)
	}
	if err := fsutil.WriteFile(filepath.Join(n.cfg.Dir, clusterFile), []byte(clusterID+"\n")); err != nil {
		n.log.Error("recording cluster id", "err", err)
	}
	n.log.Info("cluster bootstrapped", "cluster_id", clusterID)
}

// onMap learns the server members' addresses from a new map.
func (n *Node) onMap(m *clustermap.Map) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, mb := range m.Members {
		if mb.HasRole(clustermap.RoleServer) {
			n.names[RaftID(mb.ID)] = mb.ID
			if n.servers[mb.ID] == "" {
				n.servers[mb.ID] = mb.Addr
			}
		}
	}
}
