package controlplane

import (
	"context"
	"crypto/tls"
	"sync"
	"time"

	"mecha/internal/muxconn"
)

// Methods of the muxconn range MethodFirst–MethodLast the control plane
// serves (Node.Handle).
const (
	// MethodFirst and MethodLast bound the range the runtime's muxconn
	// handler passes to Node.Handle.
	MethodFirst uint16 = 0x0100
	MethodLast  uint16 = 0x01FF

	// MethodRaft carries one raftpb.Message (Marshal()ed) to the node; the
	// answer is empty.
	MethodRaft uint16 = 0x0100
	// MethodPropose asks the raft leader to propose a command (its
	// clustermap.Encode bytes) and answer once it is applied: the raft
	// index (uint64), a status byte (0 applied, 1 refused by Apply,
	// 2 not the leader) and the refusal's message.
	MethodPropose uint16 = 0x0101
	// MethodGetMap long-polls the map: the body is the version the caller
	// holds (uint64) and how long it may wait in milliseconds (uint32);
	// the answer (clustermap.EncodeMap) comes as soon as the map is newer,
	// or with the current map when the wait is over.
	MethodGetMap uint16 = 0x0102
	// MethodSubmit is MethodPropose for runtimes that are not servers:
	// any server takes it and proposes it as Node.Propose does (through
	// the leader); the answer has MethodPropose's layout, the index being
	// the server's.
	MethodSubmit uint16 = 0x0103
)

// Transport calls a method on the runtime at addr (its internal port).
// MuxTransport is the real one; tests may wire nodes in memory.
type Transport interface {
	Call(ctx context.Context, addr string, method uint16, body []byte) ([]byte, error)
}

// MuxTransport calls other runtimes over muxconn, with two clients per
// address: one carries raft's messages alone, the other the rest
// (forwarded proposals and map polls, which wait for the log). A burst of
// waiting proposals then cannot fill a connection's requests in flight
// and have the peer refuse heartbeats, which made the leader step down
// for want of a quorum (etcd keeps its raft messages on their own
// streams for the same reason).
type MuxTransport struct {
	// Token is the peer token sent in the hello.
	Token string
	// TLS, when set, secures the connections.
	TLS *tls.Config
	// DialTimeout bounds a dial and its hello (1 s when zero: a raft peer
	// that does not answer within that is as good as down).
	DialTimeout time.Duration

	mu      sync.Mutex
	clients map[transportKey]*muxconn.Client
	closed  bool
}

type transportKey struct {
	addr string
	raft bool
}

// Call implements Transport.
func (t *MuxTransport) Call(ctx context.Context, addr string, method uint16, body []byte) ([]byte, error) {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil, muxconn.ErrClosed
	}
	k := transportKey{addr: addr, raft: method == MethodRaft}
	c := t.clients[k]
	if c == nil {
		d := t.DialTimeout
		if d == 0 {
			d = time.Second
		}
		c = &muxconn.Client{Addr: addr, Token: t.Token, TLS: t.TLS, Conns: 1, DialTimeout: d}
		if t.clients == nil {
			t.clients = make(map[transportKey]*muxconn.Client)
		}
		t.clients[k] = c
	}
	t.mu.Unlock()
	return c.Call(ctx, method, body)
}

// Close closes every client.
func (t *MuxTransport) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closed = true
	for _, c := range t.clients {
		_ = c.Close()
	}
	t.clients = nil
	return nil
}
