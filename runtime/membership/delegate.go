package membership

import (
	"bytes"

	"github.com/hashicorp/memberlist"
)

// delegate is memberlist's Delegate for one pool. memberlist calls it from
// its own goroutines; every method takes Node.mu briefly and none calls
// back into memberlist.
type delegate struct {
	n *Node
	p pool
}

// NodeMeta implements memberlist.Delegate.
func (d *delegate) NodeMeta(limit int) []byte {
	b := *d.n.meta.Load()
	if len(b) > limit {
		return nil
	}
	return b
}

// NotifyMsg implements memberlist.Delegate: a broadcast or a TCP message.
// A frame that does not decode is logged and dropped.
func (d *delegate) NotifyMsg(b []byte) {
	m, err := decodeMessage(b)
	if err != nil {
		d.n.log.Warn("dropped a malformed gossip message", "pool", d.p, "bytes", len(b), "err", err)
		return
	}
	n := d.n
	n.mu.Lock()
	defer n.mu.Unlock()
	switch {
	case m.want != "":
		if d.p == lanPool {
			local := n.cat.Local()
			n.sendLocked(outMsg{pool: lanPool, to: m.want, msg: encodeEntry(&local)})
		}
	case m.entry != nil:
		if d.p != lanPool {
			n.log.Debug("dropped a node entry from the wan", "node", m.entry.Node)
			return
		}
		if eff := n.applyLocked(EntryReceived{Entry: *m.entry}); eff.Fresh {
			n.spreadLocked(lanPool, "e/"+m.entry.Node, bytes.Clone(b), false)
		}
	case m.view != nil:
		if eff := n.applyLocked(ViewReceived{View: *m.view}); eff.Fresh {
			n.viewFreshLocked(d.p, m.view, bytes.Clone(b), false)
		}
	}
}

// viewFreshLocked spreads a remote DC's view that was news: on the pool
// it came from by gossip, and from the WAN into the LAN by the relay.
func (n *Node) viewFreshLocked(from pool, v *DCView, msg []byte, pushPull bool) {
	name := "v/" + v.DC + "/" + v.Origin
	if !pushPull {
		n.spreadLocked(from, name, msg, false)
	}
	if from == wanPool && n.cat.isRelay() {
		n.spreadLocked(lanPool, name, msg, true)
	}
}

// GetBroadcasts implements memberlist.Delegate.
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte {
	return d.n.queue(d.p).GetBroadcasts(overhead, limit)
}

// LocalState implements memberlist.Delegate: the LAN sends its entries
// and the remote views, the WAN this DC's view and the remote views.
func (d *delegate) LocalState(join bool) []byte {
	n := d.n
	n.mu.Lock()
	defer n.mu.Unlock()
	s := n.cat.state()
	if d.p == wanPool {
		s.entries = nil
		if n.viewSeq > 0 {
			s.views = append(s.views, n.cat.localView(n.viewSeq))
		}
	}
	return encodeState(&s)
}

// MergeRemoteState implements memberlist.Delegate. A LAN merge also tells
// the catalog it is in sync with the pool.
func (d *delegate) MergeRemoteState(b []byte, join bool) {
	s, err := decodeState(b)
	if err != nil {
		d.n.log.Warn("dropped malformed push/pull state", "pool", d.p, "bytes", len(b), "err", err)
		return
	}
	n := d.n
	n.mu.Lock()
	defer n.mu.Unlock()
	if d.p == lanPool {
		for _, e := range s.entries {
			n.applyLocked(EntryReceived{Entry: e})
		}
	}
	for i := range s.views {
		if eff := n.applyLocked(ViewReceived{View: s.views[i]}); eff.Fresh {
			n.viewFreshLocked(d.p, &s.views[i], encodeView(&s.views[i]), true)
		}
	}
	if d.p == lanPool {
		n.applyLocked(Synced{})
	}
}

// events is memberlist's EventDelegate for one pool. memberlist calls it
// with its node lock held.
type events struct {
	n *Node
	p pool
}

func (e *events) alive(node *memberlist.Node, joined bool) {
	if node.Name == e.n.name {
		return
	}
	e.n.setPeer(e.p, node, false)
	if e.p == wanPool {
		if joined {
			e.n.wanSize.Add(1)
			e.n.log.Info("gateway joined the wan", "gateway", node.Name, "addr", node.Address())
		}
		return
	}
	meta, err := DecodeMeta(node.Meta)
	if err != nil {
		e.n.log.Warn("ignoring a member with malformed meta", "member", node.Name, "addr", node.Address(), "err", err)
		return
	}
	ev := Event(NodeUpdated{Name: node.Name, Addr: node.Address(), Meta: meta})
	if joined {
		ev = NodeJoined{Name: node.Name, Addr: node.Address(), Meta: meta}
	}
	e.n.mu.Lock()
	defer e.n.mu.Unlock()
	e.n.applyLocked(ev)
}

// NotifyJoin implements memberlist.EventDelegate.
func (e *events) NotifyJoin(node *memberlist.Node) { e.alive(node, true) }

// NotifyUpdate implements memberlist.EventDelegate.
func (e *events) NotifyUpdate(node *memberlist.Node) { e.alive(node, false) }

// NotifyLeave implements memberlist.EventDelegate.
func (e *events) NotifyLeave(node *memberlist.Node) {
	if node.Name == e.n.name {
		return
	}
	dead := node.State == memberlist.StateDead
	e.n.setPeer(e.p, node, true)
	if e.p == wanPool {
		e.n.wanSize.Add(-1)
		e.n.log.Info("gateway left the wan", "gateway", node.Name, "dead", dead)
		return
	}
	e.n.log.Info("member left", "member", node.Name, "dead", dead)
	e.n.mu.Lock()
	defer e.n.mu.Unlock()
	e.n.applyLocked(NodeLeft{Name: node.Name, Dead: dead})
}

// broadcast is one queued gossip message. Its name ("e/<node>",
// "v/<dc>/<origin>") lets a newer message replace a queued older one.
type broadcast struct {
	name string
	msg  []byte
}

// Invalidates implements memberlist.Broadcast.
func (b *broadcast) Invalidates(o memberlist.Broadcast) bool {
	ob, ok := o.(*broadcast)
	return ok && ob.name == b.name
}

// Name implements memberlist.NamedBroadcast.
func (b *broadcast) Name() string { return b.name }

// Message implements memberlist.Broadcast.
func (b *broadcast) Message() []byte { return b.msg }

// Finished implements memberlist.Broadcast.
func (b *broadcast) Finished() {}
