package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"mecha/internal/clustermap"
	"mecha/internal/muxconn"
	"mecha/statestore"
)

// DefaultMapWait bounds how long a member waits for its map to catch up
// with a caller's (Server), and a router for a map at least as new as a
// "moved" answer's (Router).
const DefaultMapWait = 2 * time.Second

// Server serves the routed operations of the stores attached to it
// (one state.crux component each) for the slots this member leads.
type Server struct {
	member  string
	maps    MapSource
	mapWait time.Duration
	log     *slog.Logger

	// Replicate, when set before the first Attach, replicates every
	// attached store's slots to their replicas (replicate.go).
	Replicate *ReplicationConfig
	// OnStoreFailure, when set before the first Attach, is told when a
	// store cannot write here (statestore.ErrNoSpace, ErrFailed): as a
	// leader serving a write, or as a follower applying its leader's
	// records. The runtime then drains this member.
	OnStoreFailure func(store string, err error)

	mu     sync.RWMutex
	stores map[string]*statestore.Engine
	repls  map[string]*Replication
}

// NewServer returns the server of member (its id in the map). log may
// be nil.
func NewServer(member string, maps MapSource, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{member: member, maps: maps, mapWait: DefaultMapWait, log: log, stores: map[string]*statestore.Engine{}}
}

// Attach serves store (the component's name) from e until detach is
// called.
func (s *Server) Attach(store string, e *statestore.Engine) (detach func()) {
	var rep *Replication
	if s.Replicate != nil {
		rep = newReplication(store, s.member, e, s.maps, *s.Replicate, s.log)
		rep.onStoreFailure = func(err error) { s.storeFailed(store, err) }
	}
	s.mu.Lock()
	s.stores[store] = e
	if rep != nil {
		if s.repls == nil {
			s.repls = map[string]*Replication{}
		}
		s.repls[store] = rep
	}
	s.mu.Unlock()
	if rep != nil {
		rep.start()
	}
	return func() {
		s.mu.Lock()
		if s.stores[store] == e {
			delete(s.stores, store)
		}
		if rep != nil && s.repls[store] == rep {
			delete(s.repls, store)
		}
		s.mu.Unlock()
		if rep != nil {
			rep.stop()
		}
	}
}

// Replication is store's replication on this member, nil when off.
func (s *Server) Replication(store string) *Replication {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.repls[store]
}

// handleReplication serves MethodReplicaFetch and MethodSlotCopy.
func (s *Server) handleReplication(ctx context.Context, method uint16, body []byte) ([]byte, error) {
	var store string
	var fb *FetchBatch
	var cr *CopyRequest
	var err error
	if method == MethodReplicaFetch {
		if fb, err = DecodeFetchBatch(body); err == nil {
			store = fb.Store
		}
	} else {
		if cr, err = DecodeCopyRequest(body); err == nil {
			store = cr.Store
		}
	}
	if err != nil {
		return nil, &muxconn.Error{Code: muxconn.CodeApp, Msg: err.Error()}
	}
	rep := s.Replication(store)
	if rep == nil {
		return nil, &muxconn.Error{Code: muxconn.CodeApp, Msg: fmt.Sprintf("crux replication: store %q is not replicated on member %q", store, s.member)}
	}
	if fb != nil {
		return rep.handleFetch(ctx, fb), nil
	}
	return rep.handleCopy(cr), nil
}

// Handle is the muxconn handler of methods MethodFirst to MethodLast.
// Every failure of the request is in the answer (AppendResponse's status
// byte); an error return is only muxconn.ErrUnknownMethod.
func (s *Server) Handle(ctx context.Context, method uint16, body []byte) ([]byte, error) {
	if method == MethodReplicaFetch || method == MethodSlotCopy {
		return s.handleReplication(ctx, method, body)
	}
	if !knownMethod(method) {
		return nil, muxconn.ErrUnknownMethod
	}
	resp := s.serve(ctx, method, body)
	return AppendResponse(nil, method, resp), nil
}

func (s *Server) serve(ctx context.Context, method uint16, body []byte) *Response {
	req, err := DecodeRequest(method, body)
	if err != nil {
		return &Response{Err: toError(err)}
	}
	s.mu.RLock()
	e := s.stores[req.Store]
	s.mu.RUnlock()
	if e == nil {
		return &Response{Err: &Error{Code: CodeUnavailable, Msg: fmt.Sprintf("crux cluster: store %q is not served on member %q", req.Store, s.member)}}
	}
	if err := s.leads(ctx, req.Slots); err != nil {
		return &Response{Err: err}
	}
	if err := checkSlots(method, req); err != nil {
		return &Response{Err: err}
	}
	if method == MethodGetStrong {
		return s.getStrong(ctx, req.Store, e, req.Key)
	}
	resp := serveEngine(e, method, req)
	if resp.Err != nil && (resp.Err.Code == CodeNoSpace || resp.Err.Code == CodeFailed) {
		s.storeFailed(req.Store, resp.Err)
	}
	return resp
}

// storeFailed tells OnStoreFailure.
func (s *Server) storeFailed(store string, err error) {
	if s.OnStoreFailure != nil {
		s.OnStoreFailure(store, err)
	}
}

// DiskFailure says whether err is a store's failure to write (a full or
// failing disk), as opposed to a refusal of the request.
func DiskFailure(err error) bool {
	return errors.Is(err, statestore.ErrNoSpace) || errors.Is(err, statestore.ErrFailed)
}

// getStrong reads key and confirms the read with the slot's in-sync
// replicas (Replication.Confirm), when the store is replicated.
func (s *Server) getStrong(ctx context.Context, store string, e *statestore.Engine, key string) *Response {
	resp := &Response{}
	var err error
	resp.Item, resp.Found, err = s.GetStrong(ctx, store, e, key)
	if err != nil {
		return &Response{Err: toError(err)}
	}
	return resp
}

// GetStrong reads key from e, the store's engine, and when the store is
// replicated confirms the read: the slot's in-sync replicas hold what it
// read and still follow this member at its epoch after the read.
func (s *Server) GetStrong(ctx context.Context, store string, e *statestore.Engine, key string) (statestore.Item, bool, error) {
	rep := s.Replication(store)
	if rep == nil {
		return e.Get(key)
	}
	return rep.GetConfirmed(ctx, key)
}

// leads checks that this member leads every slot at the caller's epoch
// or a newer one. A caller whose map is newer than this member's waits
// (up to mapWait) for this member's map to catch up, so that a deposed
// leader that has not heard yet does not serve.
func (s *Server) leads(ctx context.Context, slots []SlotEpoch) *Error {
	m := s.maps.Map()
	for _, se := range slots {
		g := m.Slot(se.Slot)
		if g != nil && g.Epoch < se.Epoch {
			m = s.awaitEpoch(ctx, m, se.Slot, se.Epoch)
			g = m.Slot(se.Slot)
			if g.Epoch < se.Epoch {
				return &Error{Code: CodeRetry, Msg: fmt.Sprintf("crux cluster: member %q's map is behind for slot %d (epoch %d, the caller's %d)", s.member, se.Slot, g.Epoch, se.Epoch)}
			}
		}
		if g == nil {
			return &Error{Code: CodeRetry, Msg: fmt.Sprintf("crux cluster: member %q has no cluster map yet", s.member)}
		}
		if g.Leader != s.member {
			return &Error{Code: CodeMoved, Slot: se.Slot, Epoch: g.Epoch, Leader: g.Leader}
		}
	}
	return nil
}

func (s *Server) awaitEpoch(ctx context.Context, m *clustermap.Map, slot int, epoch uint64) *clustermap.Map {
	return awaitEpoch(ctx, s.maps, s.mapWait, m, slot, epoch)
}

// awaitEpoch waits (up to wait) until maps holds slot at epoch or newer
// and returns the newest map.
func awaitEpoch(ctx context.Context, maps MapSource, wait time.Duration, m *clustermap.Map, slot int, epoch uint64) *clustermap.Map {
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	for {
		if g := m.Slot(slot); g != nil && g.Epoch >= epoch {
			return m
		}
		if maps.WaitNewer(wctx, m.Version) != nil {
			return maps.Map()
		}
		m = maps.Map()
	}
}

// checkSlots refuses a key outside the request's slots: a caller must
// send each key to its own slot's leader.
func checkSlots(method uint16, req *Request) *Error {
	if method == MethodScan || method == MethodDeleteChildren {
		return nil
	}
	in := func(key string) *Error {
		s := statestore.SlotOf(key)
		for _, se := range req.Slots {
			if se.Slot == s {
				return nil
			}
		}
		return &Error{Code: CodeBadRequest, Msg: fmt.Sprintf("crux cluster: key %q is in slot %d, not in the request's %v", key, s, req.Slots)}
	}
	if method == MethodGet || method == MethodGetStrong {
		if err := in(req.Key); err != nil {
			return err
		}
	}
	for _, k := range req.Keys {
		if err := in(k); err != nil {
			return err
		}
	}
	for i := range req.Writes {
		if err := in(req.Writes[i].Key); err != nil {
			return err
		}
	}
	return nil
}

// serveEngine runs a checked request on e.
func serveEngine(e *statestore.Engine, method uint16, req *Request) *Response {
	resp := &Response{}
	var err error
	switch method {
	case MethodGet:
		resp.Item, resp.Found, err = e.Get(req.Key)
	case MethodSet:
		var v uint64
		v, err = e.Set(req.Writes[0])
		resp.Versions = []uint64{v}
	case MethodDelete:
		err = e.Delete(req.Writes[0])
	case MethodApply:
		resp.Versions, err = e.Apply(req.Writes)
	case MethodBulkGet:
		resp.Results = make([]Result, len(req.Keys))
		for i, k := range req.Keys {
			res := &resp.Results[i]
			var gerr error
			res.Item, res.Found, gerr = e.Get(k)
			if gerr != nil {
				res.Err = toError(gerr)
			}
		}
	case MethodBulkSet:
		resp.Results = make([]Result, len(req.Writes))
		for i, w := range req.Writes {
			res := &resp.Results[i]
			var serr error
			if w.Delete {
				serr = e.Delete(w)
			} else {
				res.Version, serr = e.Set(w)
			}
			if serr != nil {
				res.Err = toError(serr)
			}
		}
	case MethodScan:
		resp.Items = e.ScanIn(slotsOf(req.Slots), req.Prefix, req.After, req.Limit)
	case MethodDeleteChildren:
		resp.Count, err = e.DeleteChildrenIn(req.Prefix, slotsOf(req.Slots))
	}
	if err != nil {
		return &Response{Err: toError(err)}
	}
	return resp
}

func slotsOf(ses []SlotEpoch) []int {
	out := make([]int, len(ses))
	for i, se := range ses {
		out[i] = se.Slot
	}
	return out
}
