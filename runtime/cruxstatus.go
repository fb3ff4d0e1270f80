package runtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"time"

	"mecha/internal/clustermap"
	"mecha/runtime/metrics"
)

// cruxStatus is GET /v1.0-alpha1/crux/status on the metrics port, what
// `mecha crux status` prints: where this runtime stands in Crux, the
// members with their slots, and what is unavailable or moving.
type cruxStatus struct {
	// Mode is "host" (this runtime owns its data dir's Crux), "guest"
	// (it stores through the data dir's owner), "server" (a server and
	// data member of the Crux cluster) or "client" (--crux-client).
	Mode      string `json:"mode"`
	Member    string `json:"member"`
	ClusterID string `json:"clusterId,omitempty"`
	// MapVersion is the version of the map this runtime routes by.
	MapVersion uint64 `json:"mapVersion"`
	// Problem says why there is no map yet, when known.
	Problem      string            `json:"problem,omitempty"`
	ControlPlane *cruxControlPlane `json:"controlPlane,omitempty"`
	Members      []cruxMember      `json:"members"`
	Slots        cruxSlots         `json:"slots"`
	Moves        []cruxMove        `json:"moves,omitempty"`
	Routed       cruxRouted        `json:"routed"`
	Replication  *cruxReplication  `json:"replication,omitempty"`
}

type cruxControlPlane struct {
	Leader string   `json:"leader"`
	Term   uint64   `json:"term"`
	Voters []string `json:"voters"`
}

type cruxMember struct {
	ID       string   `json:"id"`
	Addr     string   `json:"addr"`
	Roles    []string `json:"roles"`
	State    string   `json:"state"`
	Draining bool     `json:"draining,omitempty"`
	// Restarting: its leaderships moved away for a restart; it keeps
	// its replicas.
	Restarting bool `json:"restarting,omitempty"`
	// Leaders and Replicas count the slots it leads and holds.
	Leaders  int `json:"leaders"`
	Replicas int `json:"replicas"`
}

type cruxSlots struct {
	Total           int  `json:"total"`
	Leaderless      int  `json:"leaderless"`
	UnderReplicated int  `json:"underReplicated"`
	Moving          int  `json:"moving"`
	Balanced        bool `json:"balanced"`
}

type cruxMove struct {
	Slot  int    `json:"slot"`
	From  string `json:"from,omitempty"`
	To    string `json:"to"`
	Phase string `json:"phase"`
}

// cruxReplication is this member's replication: the worst lag of the
// slots it leads, and what it fetched and copied as a follower.
type cruxReplication struct {
	SlotsLagging  int     `json:"slotsLagging"`
	MaxLagRecords int64   `json:"maxLagRecords"`
	MaxLagMs      float64 `json:"maxLagMs"`
	Fetched       int64   `json:"fetchedRecords"`
	Copies        int64   `json:"copies"`
}

type cruxRouted struct {
	Local       int64 `json:"local"`
	Remote      int64 `json:"remote"`
	Moved       int64 `json:"moved"`
	Unavailable int64 `json:"unavailable"`
}

// cruxMode names this runtime's place in Crux.
func (r *Runtime) cruxMode() string {
	switch {
	case r.cfg.BootstrapExpect > 0:
		return "server"
	case r.cfg.CruxClient:
		return "client"
	case r.guestOf != nil:
		return "guest"
	}
	return "host"
}

// cruxStatusNow builds the status from the current map.
func (r *Runtime) cruxStatusNow() cruxStatus {
	m := r.cruxMaps.Map()
	st := cruxStatus{Mode: r.cruxMode(), Member: r.crux.Member, ClusterID: m.ClusterID, MapVersion: m.Version, Members: []cruxMember{}}
	if err := r.cruxMaps.Problem(); err != nil && !m.Bootstrapped() {
		st.Problem = err.Error()
	}
	if cp := r.cp.Load(); cp != nil {
		s := cp.node.Status()
		st.ControlPlane = &cruxControlPlane{Leader: s.Leader, Term: s.Term, Voters: s.Voters}
	}
	leaders, replicas := map[string]int{}, map[string]int{}
	if m.Bootstrapped() {
		st.Slots.Total = clustermap.NumSlots
		for i := range clustermap.NumSlots {
			g := m.Slot(i)
			if g == nil {
				continue
			}
			if g.Leader != "" {
				leaders[g.Leader]++
			}
			for _, id := range g.Replicas {
				replicas[id]++
			}
			if g.Move != nil {
				st.Moves = append(st.Moves, cruxMove{Slot: i, From: g.Move.From, To: g.Move.To, Phase: g.Move.Phase.String()})
			}
		}
		rep := m.Report()
		for _, ref := range rep.Leaderless {
			if ref.IsSlot() {
				st.Slots.Leaderless++
			}
		}
		for _, ref := range rep.UnderReplicated {
			if ref.IsSlot() {
				st.Slots.UnderReplicated++
			}
		}
		st.Slots.Moving = len(st.Moves)
		st.Slots.Balanced = rep.Slots.LeadersBalanced && rep.Slots.ReplicasBalanced
	}
	for _, mb := range m.Members {
		st.Members = append(st.Members, cruxMember{ID: mb.ID, Addr: mb.Addr, Roles: mb.Roles, State: mb.State.String(),
			Draining: mb.Draining, Restarting: mb.Restarting, Leaders: leaders[mb.ID], Replicas: replicas[mb.ID]})
	}
	sort.Slice(st.Members, func(i, j int) bool { return st.Members[i].ID < st.Members[j].ID })
	if s := r.cruxStats; s != nil {
		st.Routed = cruxRouted{Local: s.Local.Load(), Remote: s.Remote.Load(), Moved: s.Moved.Load(), Unavailable: s.Unavailable.Load()}
	}
	if r.crux != nil && r.crux.Server != nil && len(r.crux.Server.Replications()) > 0 {
		cr := &cruxReplication{}
		now := time.Now()
		for _, rep := range r.crux.Server.Replications() {
			cr.Fetched += int64(rep.Fetched.Load())
			cr.Copies += int64(rep.Copies.Load())
			for _, l := range rep.Lags(now) {
				if l.Records > 0 {
					cr.SlotsLagging++
				}
				cr.MaxLagRecords = max(cr.MaxLagRecords, l.Records)
				cr.MaxLagMs = max(cr.MaxLagMs, float64(l.Behind.Microseconds())/1000)
			}
		}
		st.Replication = cr
	}
	return st
}

// cruxStatusAPI serves GET /v1.0-alpha1/crux/status.
func (r *Runtime) cruxStatusAPI(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodGet && req.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, `{"errorCode":"ERR_METHOD_NOT_ALLOWED","message":"the Crux status is read with GET"}`, http.StatusMethodNotAllowed)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(r.cruxStatusNow())
}

// cruxDrainAPI serves POST /v1.0-alpha1/crux/drain: {"member": ID,
// "cancel": bool}, member defaulting to this runtime's. It proposes the
// drain to the control plane, which moves the member's leaderships away,
// then its replicas; `mecha crux status` shows the progress.
func (r *Runtime) cruxDrainAPI(w http.ResponseWriter, req *http.Request) {
	var body struct {
		Member string `json:"member"`
		Cancel bool   `json:"cancel"`
	}
	if !adminPost(w, req, "drain", &body) {
		return
	}
	fail := func(status int, code, msg string) { adminFail(w, status, code, msg) }
	if body.Member == "" {
		body.Member = r.crux.Member
	}
	m := r.cruxMaps.Map()
	if mb := m.Member(body.Member); mb == nil {
		fail(http.StatusBadRequest, "ERR_CRUX_MEMBER", fmt.Sprintf("member %q is not in the Crux cluster map (version %d)", body.Member, m.Version))
		return
	}
	ctx, cancel := context.WithTimeout(req.Context(), 10*time.Second)
	defer cancel()
	if err := r.proposeCrux(ctx, clustermap.MemberDrain{ID: body.Member, Cancel: body.Cancel}); err != nil {
		fail(http.StatusServiceUnavailable, "ERR_CRUX_DRAIN", fmt.Sprintf("draining member %q: %v", body.Member, err))
		return
	}
	_ = json.NewEncoder(w).Encode(map[string]any{"member": body.Member, "draining": !body.Cancel})
}

// cruxMetrics is what AddCrux exports.
func (r *Runtime) cruxMetrics() metrics.CruxStats {
	m := r.cruxMaps.Map()
	s := metrics.CruxStats{MapVersion: int64(m.Version), LeaderChanges: r.cruxLeaderChanges.Load()}
	if st := r.cruxStats; st != nil {
		s.Local, s.Remote, s.Moved, s.Unavailable = st.Local.Load(), st.Remote.Load(), st.Moved.Load(), st.Unavailable.Load()
	}
	if r.crux != nil && r.crux.Server != nil {
		now := time.Now()
		for _, rep := range r.crux.Server.Replications() {
			s.Copies += int64(rep.Copies.Load())
			s.Fetched += int64(rep.Fetched.Load())
			for _, l := range rep.Lags(now) {
				s.Lags = append(s.Lags, metrics.CruxSlotLag{Slot: l.Slot, Records: l.Records, Seconds: l.Behind.Seconds()})
			}
		}
	}
	if !m.Bootstrapped() {
		return s
	}
	for i := range clustermap.NumSlots {
		g := m.Slot(i)
		switch {
		case g == nil:
		case g.Leader == "":
			s.Leaderless++
		case g.Leader == r.crux.Member:
			s.SlotsLed++
		}
		if g != nil && g.Move != nil {
			s.Moving++
		}
	}
	return s
}

// leaderChanges counts the slots whose leader differs between two maps.
func leaderChanges(prev, next *clustermap.Map) int64 {
	if !prev.Bootstrapped() || !next.Bootstrapped() {
		return 0
	}
	var n int64
	for i := range clustermap.NumSlots {
		if a, b := prev.Slot(i), next.Slot(i); a != nil && b != nil && a.Leader != b.Leader {
			n++
		}
	}
	return n
}

// adminPost reads the JSON body of an admin POST (what names it) into v;
// false when it answered an error (not a POST, a malformed body).
func adminPost(w http.ResponseWriter, req *http.Request, what string, v any) bool {
	w.Header().Set("Content-Type", "application/json")
	if req.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		adminFail(w, http.StatusMethodNotAllowed, "ERR_METHOD_NOT_ALLOWED", "a "+what+" is asked with POST")
		return false
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, req.Body, 4096)).Decode(v); err != nil && !errors.Is(err, io.EOF) {
		adminFail(w, http.StatusBadRequest, "ERR_MALFORMED_REQUEST", "the "+what+" request: "+err.Error())
		return false
	}
	return true
}

// adminFail answers an admin request with an error.
func adminFail(w http.ResponseWriter, status int, code, msg string) {
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"errorCode": code, "message": msg})
}
