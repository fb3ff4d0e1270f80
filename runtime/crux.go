package runtime

import (
	"context"
	"fmt"

	"mecha/internal/clustermap"
	"mecha/internal/muxconn"
	"mecha/statestore/cluster"
)

// Crux across runtimes. A runtime's state.crux components store through
// a cluster.Node: on the owner of a data dir (datadir.go) every slot is
// its own and served in-process, and its internal port serves them to
// the guests; a guest opens no engine and sends every key to the owner.
// The map of a host is fixed (hostMap); the Crux cluster of many hosts
// will give the node the control plane's map instead.

// hostOwnerID is the owner's member id in the map of a host.
const hostOwnerID = "owner"

// hostMap is the cluster map of one host's data dir: its owner, at addr,
// leads every slot. The owner and its guests build it alike, so that
// their epochs agree.
func hostMap(addr string) (*clustermap.Map, error) {
	m := clustermap.New()
	cmds := []clustermap.Command{
		clustermap.Bootstrap{ClusterID: "host", Replicas: 1},
		clustermap.MemberJoin{ID: hostOwnerID, Addr: addr, Roles: []string{clustermap.RoleData}, At: 1},
	}
	for len(cmds) > 0 {
		var err error
		if m, err = clustermap.Apply(m, cmds[0]); err != nil {
			return nil, fmt.Errorf("the host's Crux map: %T: %w", cmds[0], err)
		}
		cmds = cmds[1:]
		if len(cmds) == 0 {
			cmds = clustermap.Plan(m, clustermap.PlanConfig{})
		}
	}
	if m.Slot(0).Leader != hostOwnerID {
		return nil, fmt.Errorf("the host's Crux map leaves slot 0 to %q", m.Slot(0).Leader)
	}
	return m, nil
}

// startCrux builds the node state.crux components store through.
func (r *Runtime) startCrux() error {
	addr := "127.0.0.1:0" // the owner never calls itself
	if r.guestOf != nil {
		addr = r.guestOf.Internal
	}
	m, err := hostMap(addr)
	if err != nil {
		return err
	}
	maps := cluster.NewMapVar(m)
	clients := &cluster.Clients{Token: r.peerToken}
	if r.tls != nil {
		clients.TLS = r.tls.Client("")
	}
	log := r.log.With("component", "crux")
	r.crux = &cluster.Node{Member: hostOwnerID, Maps: maps, Clients: clients, Logger: log}
	if r.guestOf != nil {
		r.crux.Member = "guest-" + r.cfg.AppID
	} else {
		r.crux.Server = cluster.NewServer(hostOwnerID, maps, log)
	}
	return nil
}

// muxHandler serves the internal port's muxconn methods.
func (r *Runtime) muxHandler(ctx context.Context, method uint16, body []byte) ([]byte, error) {
	if method >= cluster.MethodFirst && method <= cluster.MethodLast && r.crux.Server != nil {
		return r.crux.Server.Handle(ctx, method, body)
	}
	return nil, muxconn.ErrUnknownMethod
}
