package controlplane

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"
	"go.etcd.io/raft/v3/raftpb"

	"mecha/internal/clustermap"
	"mecha/internal/muxconn"
)

// Propose has c applied: proposed here when this node leads, else
// forwarded to the leader (waiting for one to be known). It returns once
// c is applied here, with Apply's refusal if it was refused, or ctx's
// error.
func (n *Node) Propose(ctx context.Context, c clustermap.Command) error {
	data, err := clustermap.Encode(c)
	if err != nil {
		return err
	}
	t := time.NewTicker(n.cfg.TickInterval)
	defer t.Stop()
	for {
		if !n.running.Load() && n.ctx != nil && n.ctx.Err() != nil {
			return ErrStopped
		}
		if n.IsLeader() {
			_, err := n.proposeLocal(ctx, data)
			if !errors.Is(err, ErrNotLeader) {
				return err
			}
		} else if leader := n.leader.Load(); leader != 0 {
			if addr := n.addrOf(leader); addr != "" {
				index, refusal, err := n.forward(ctx, addr, data)
				if err == nil {
					if werr := n.maps.waitIndex(ctx, index); werr != nil {
						return werr
					}
					return refusal
				}
				if ctx.Err() != nil {
					return ctx.Err()
				}
				n.log.Debug("forwarding a proposal", "leader", addr, "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// proposeLocal proposes data on this node's raft and waits for it to be
// applied here.
func (n *Node) proposeLocal(ctx context.Context, cmd []byte) (uint64, error) {
	if n.ctx == nil {
		return 0, ErrStopped
	}
	id := n.idBase + n.seq.Add(1)
	data := make([]byte, 8+len(cmd))
	binary.BigEndian.PutUint64(data, id)
	copy(data[8:], cmd)
	return n.submit(ctx, &proposal{id: id, data: data, done: make(chan result, 1)})
}

// submit hands p to the raft loop and waits for its outcome.
func (n *Node) submit(ctx context.Context, p *proposal) (uint64, error) {
	select {
	case n.propc <- p:
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-n.ctx.Done():
		return 0, ErrStopped
	}
	select {
	case r := <-p.done:
		return r.index, r.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// Proposal answer statuses.
const (
	statusApplied   byte = 0
	statusRefused   byte = 1
	statusNotLeader byte = 2
)

// forward sends a proposal to the leader at addr: the raft index it was
// applied at and Apply's refusal, or the error that kept it from being
// proposed.
func (n *Node) forward(ctx context.Context, addr string, cmd []byte) (uint64, error, error) {
	b, err := n.cfg.Transport.Call(ctx, addr, MethodPropose, cmd)
	if err != nil {
		return 0, nil, err
	}
	if len(b) < 9 {
		return 0, nil, fmt.Errorf("controlplane: short propose answer from %s", addr)
	}
	index := binary.BigEndian.Uint64(b)
	switch b[8] {
	case statusApplied:
		return index, nil, nil
	case statusRefused:
		return index, refusal(string(b[9:])), nil
	default:
		return 0, nil, ErrNotLeader
	}
}

// remoteRefusal is Apply's refusal as the leader reported it.
type remoteRefusal struct {
	msg      string
	sentinel error
}

func (e *remoteRefusal) Error() string { return e.msg }
func (e *remoteRefusal) Unwrap() error { return e.sentinel }

// isRefusal reports whether err is Apply's refusal (here or at the
// leader) rather than a failure to get the command applied.
func isRefusal(err error) bool {
	var r *remoteRefusal
	return errors.As(err, &r) || clustermap.IsRefusal(err)
}

func refusal(msg string) error {
	return &remoteRefusal{msg: msg, sentinel: clustermap.RefusalIn(msg)}
}

// Handle serves the control plane's muxconn methods (MethodRaft,
// MethodPropose, MethodGetMap); the runtime's muxconn server dispatches
// the range 0x0100–0x01FF to it.
func (n *Node) Handle(ctx context.Context, method uint16, body []byte) ([]byte, error) {
	switch method {
	case MethodRaft:
		if !n.running.Load() {
			return nil, ErrStopped
		}
		var m raftpb.Message
		if err := m.Unmarshal(body); err != nil {
			return nil, err
		}
		select {
		case n.recvc <- m:
			return nil, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-n.ctx.Done():
			return nil, ErrStopped
		}
	case MethodPropose:
		if _, err := clustermap.Decode(body); err != nil {
			return nil, err
		}
		ans := make([]byte, 9, 64)
		if !n.IsLeader() {
			ans[8] = statusNotLeader
			return ans, nil
		}
		pctx, cancel := context.WithTimeout(ctx, 10*n.cfg.TickInterval*time.Duration(n.cfg.ElectionTick))
		defer cancel()
		cmd := append([]byte(nil), body...)
		index, err := n.proposeLocal(pctx, cmd)
		switch {
		case errors.Is(err, ErrNotLeader):
			ans[8] = statusNotLeader
		case index != 0:
			binary.BigEndian.PutUint64(ans, index)
			if err != nil {
				ans[8] = statusRefused
				ans = append(ans, err.Error()...)
			}
		default:
			return nil, err
		}
		return ans, nil
	case MethodGetMap:
		return handleGetMap(ctx, n.maps, body)
	case MethodSubmit:
		c, err := clustermap.Decode(body)
		if err != nil {
			return nil, err
		}
		pctx, cancel := context.WithTimeout(ctx, 10*n.cfg.TickInterval*time.Duration(n.cfg.ElectionTick))
		defer cancel()
		err = n.Propose(pctx, c)
		ans := make([]byte, 9, 64)
		switch {
		case err == nil:
		case isRefusal(err):
			ans[8] = statusRefused
			ans = append(ans, err.Error()...)
		default:
			return nil, err
		}
		return ans, nil
	}
	return nil, muxconn.ErrUnknownMethod
}

// handleGetMap answers a MethodGetMap long poll from maps.
func handleGetMap(ctx context.Context, maps *mapState, body []byte) ([]byte, error) {
	if len(body) != 12 {
		return nil, fmt.Errorf("controlplane: get map: body of %d bytes, want 12", len(body))
	}
	version := binary.BigEndian.Uint64(body)
	wait := min(time.Duration(binary.BigEndian.Uint32(body[8:]))*time.Millisecond, maxLongPoll)
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	m, _ := maps.waitNewer(wctx, version)
	return clustermap.EncodeMap(m)
}

// controller is the leader's planner: every ControllerInterval (and
// when this node becomes a ready leader) it bootstraps the map if
// needed, else proposes what clustermap.Plan returns, ignoring
// refusals (the next round plans on the newer map).
func (n *Node) controller() {
	defer n.wg.Done()
	t := time.NewTicker(n.cfg.ControllerInterval)
	defer t.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		case <-n.kick:
		}
		if n.leaderReady.Load() {
			n.controlRound()
		}
	}
}

func (n *Node) controlRound() {
	m := n.Map()
	var cmds []clustermap.Command
	if !m.Bootstrapped() {
		id := n.cfg.ClusterID
		if id == "" {
			id = uuid.NewString()
		}
		cmds = []clustermap.Command{clustermap.Bootstrap{ClusterID: id, Replicas: n.cfg.Replicas, RebuildAfter: n.cfg.RebuildAfter}}
	} else {
		// A Tick only when a dead member is due to be declared gone:
		// an idle cluster writes nothing to its log.
		now := time.Now().UnixNano()
		for _, mb := range m.Members {
			if mb.State == clustermap.StateDead && now-mb.Since >= int64(m.Settings.RebuildAfter) {
				cmds = append(cmds, clustermap.Tick{Now: now})
				break
			}
		}
		if n.reconcileVoters(m) {
			return
		}
		cmds = append(cmds, clustermap.Plan(m, n.cfg.Plan)...)
	}
	// The round's commands are proposed together and waited for
	// together: raft orders them, each is checked against the map it
	// lands on, and a round of hundreds (a drain's leader transfers)
	// takes a few log writes instead of one each.
	ctx, cancel := context.WithTimeout(n.ctx, n.cfg.ControllerInterval*5)
	defer cancel()
	var wg sync.WaitGroup
	for _, c := range cmds {
		data, err := clustermap.Encode(c)
		if err != nil {
			n.log.Error("encoding a planned command", "err", err)
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := n.proposeLocal(ctx, data)
			switch {
			case err == nil:
			case errors.Is(err, ErrNotLeader), errors.Is(err, ErrLeaderChanged), errors.Is(err, ErrStopped), n.ctx.Err() != nil:
			default:
				n.log.Debug("planned command refused", "kind", c.Kind().String(), "err", err)
			}
		}()
	}
	wg.Wait()
}

// reconcileVoters makes raft's voters follow the map's server members:
// a live server member that is not a voter is added, a server member that
// left is removed (never this node). One change per round, waited for; it
// reports whether it proposed one.
func (n *Node) reconcileVoters(m *clustermap.Map) bool {
	var voters []uint64
	if v := n.voters.Load(); v != nil {
		voters = *v
	}
	for _, mb := range m.Members {
		if !mb.HasRole(clustermap.RoleServer) {
			continue
		}
		id := RaftID(mb.ID)
		voter := slices.Contains(voters, id)
		var cc *raftpb.ConfChange
		switch {
		case !voter && mb.Alive() && mb.Addr != "":
			cc = &raftpb.ConfChange{Type: raftpb.ConfChangeAddNode, NodeID: id}
		case voter && mb.State == clustermap.StateLeft && id != n.id:
			cc = &raftpb.ConfChange{Type: raftpb.ConfChangeRemoveNode, NodeID: id}
		default:
			continue
		}
		n.log.Info("raft configuration change", "change", cc.Type.String(), "server", mb.ID)
		ctx, cancel := context.WithTimeout(n.ctx, n.cfg.ControllerInterval*5)
		_, err := n.submit(ctx, &proposal{id: n.idBase + n.seq.Add(1), cc: cc, done: make(chan result, 1)})
		cancel()
		if err != nil {
			n.log.Warn("raft configuration change", "server", mb.ID, "err", err)
		}
		return true
	}
	return false
}

// MemberAlive records that the failure detector sees member name at addr
// with roles: a MemberJoin when the map does not hold it (or holds it
// with another address or roles, or as left), a MemberAlive when it was
// dead or gone, nothing when it is alive already.
func (n *Node) MemberAlive(ctx context.Context, name, addr string, roles []string) error {
	mb := n.Map().Member(name)
	now := time.Now().UnixNano()
	rs := slices.Clone(roles)
	slices.Sort(rs)
	rs = slices.Compact(rs)
	switch {
	case mb == nil || mb.State == clustermap.StateLeft || mb.Addr != addr || !slices.Equal(mb.Roles, rs):
		return n.Propose(ctx, clustermap.MemberJoin{ID: name, Addr: addr, Roles: rs, At: now})
	case !mb.Alive():
		return n.Propose(ctx, clustermap.MemberAlive{ID: name, At: now})
	}
	return nil
}

// MemberDead records that the failure detector lost member name.
func (n *Node) MemberDead(ctx context.Context, name string) error {
	mb := n.Map().Member(name)
	if mb == nil || !mb.Alive() {
		return nil
	}
	return n.Propose(ctx, clustermap.MemberDead{ID: name, At: time.Now().UnixNano()})
}
