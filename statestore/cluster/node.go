package cluster

import (
	"context"
	"log/slog"

	"mecha/statestore"
)

// Node is what the runtime wires once: this member's identity, its map,
// the clients to the others and, on a member with the data role, the
// Server its muxconn server hands methods MethodFirst–MethodLast to. Its
// Backend method is statestore.ComponentDefaults.Backend: each state.crux
// component then routes through a Router of its own.
type Node struct {
	// Member is this runtime's member id in the map.
	Member string
	// Maps gives the cluster map.
	Maps MapSource
	// Clients reach the other members.
	Clients *Clients
	// Server serves this member's slots; nil for a runtime with no data
	// role (its routers then send every key to its leader).
	Server *Server
	// Stats, when set, counts every router's decisions.
	Stats  *Stats
	Logger *slog.Logger
}

// Backend returns the Router of the component store, whose engine is
// local: attached to the Server (and used in-process for the slots this
// member leads) when the node has one, unused otherwise. The router's
// Close (the component's) detaches it.
func (n *Node) Backend(store string, local *statestore.Engine) (statestore.Backend, error) {
	cfg := RouterConfig{Member: n.Member, Store: store, Maps: n.Maps, Clients: n.Clients, Stats: n.Stats, Logger: n.Logger}
	if n.Server != nil {
		cfg.Engine = local
		cfg.OnClose = n.Server.Attach(store, local)
		srv := n.Server
		cfg.OnStoreFailure = srv.OnStoreFailure
		cfg.GetStrong = func(ctx context.Context, key string) (statestore.Item, bool, error) {
			return srv.GetStrong(ctx, store, local, key)
		}
	}
	return NewRouter(cfg), nil
}
