package membership

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/hashicorp/memberlist"
)

// The gossip wire formats. Every frame starts with wireVersion; integers
// are uvarints and strings are a uvarint length then the bytes. Decoders
// bound every length and count by the bytes left, so a hostile frame
// cannot make them allocate more than it is long, and they reject
// trailing bytes: a new layout takes a new wireVersion.

// ErrMalformed is wrapped by every decoding error: the frame is dropped.
var ErrMalformed = errors.New("malformed gossip frame")

// ErrMetaTooLarge means the node meta does not fit memberlist's limit.
var ErrMetaTooLarge = errors.New("node meta too large")

const (
	wireVersion = 2 // 2: node entries carry traffic rules

	frameEntry byte = 1 // a NodeEntry, broadcast on the LAN
	frameView  byte = 2 // a DCView, on the WAN and relayed on the LAN
	frameWant  byte = 3 // a node asks another for its current entry
	frameState byte = 4 // push/pull state: entries and views

	maxName  = 128 // node names, DCs, regions, roles, app-ids, addresses
	maxRoles = 16
	maxApps  = 4096
	// maxRules and maxRuleSpec bound the traffic rules an entry carries.
	maxRules = 256
	// MaxRuleSpec bounds a traffic rule's spec.
	MaxRuleSpec = 4096
	maxNodes    = 1 << 16
	maxGws      = 64
)

// Meta is the compact node meta memberlist carries in every alive
// message (at most 512 bytes). The node's name is memberlist's node name;
// the app list is too large for the meta and travels in NodeEntry.
type Meta struct {
	DC, Region string
	Roles      []string
	Gateway    bool
	// The runtime's ports.
	HTTPPort, GRPCPort, InternalPort, BrokerPort int
	// Incarnation and Version name the node's current catalog entry, so
	// that a peer that missed its broadcast knows to ask for it.
	Incarnation, Version uint64
}

// App is one app-id a runtime hosts and whether it is healthy.
type App struct {
	ID      string `json:"id"`
	Healthy bool   `json:"healthy"`
}

// NodeEntry is one runtime's catalog entry: where it is and which apps it
// hosts. (Incarnation, Version) orders a node's entries: the incarnation
// changes when the runtime restarts, the version with every change, and
// an older entry never replaces a newer one.
type NodeEntry struct {
	Node         string `json:"node"`
	DC           string `json:"dc"`
	Region       string `json:"region,omitempty"`
	Addr         string `json:"addr"`
	InternalPort int    `json:"internalPort"`
	Gateway      bool   `json:"gateway,omitempty"`
	Incarnation  uint64 `json:"incarnation"`
	Version      uint64 `json:"version"`
	Apps         []App  `json:"apps,omitempty"`
	// Traffic is the newest traffic rule per target app this node knows:
	// rules are set on any node and every node adopts the newest, so a
	// rule lives as long as any node does.
	Traffic []TrafficRule `json:"traffic,omitempty"`
}

// TrafficRule is a cluster-wide rule for calls to App (its routing and
// balancing), last-writer-wins by Stamp (milliseconds since the epoch
// when it was set; ties go to the larger Spec). An empty Spec clears the
// rule. The runtime gives Spec its meaning; membership only spreads it.
type TrafficRule struct {
	App   string `json:"app"`
	Stamp uint64 `json:"stamp"`
	Spec  []byte `json:"spec,omitempty"`
}

// supersedes reports whether r wins over o.
func (r TrafficRule) supersedes(o TrafficRule) bool {
	return r.Stamp > o.Stamp || (r.Stamp == o.Stamp && string(r.Spec) > string(o.Spec))
}

// newerThan reports whether e supersedes o.
func (e *NodeEntry) newerThan(o *NodeEntry) bool {
	return newer(e.Incarnation, e.Version, o.Incarnation, o.Version)
}

func newer(aInc, aVer, bInc, bVer uint64) bool {
	return aInc > bInc || (aInc == bInc && aVer > bVer)
}

// DCView is one data center's catalog as one of its gateways (Origin) saw
// it: the entries of its live nodes and the endpoints of its gateways.
// Gateways publish it on the WAN, and relay the views they receive into
// their own LAN. (Incarnation, Seq) orders one origin's views.
type DCView struct {
	DC          string      `json:"dc"`
	Origin      string      `json:"origin"`
	Incarnation uint64      `json:"incarnation"`
	Seq         uint64      `json:"seq"`
	Gateways    []string    `json:"gateways"`
	Nodes       []NodeEntry `json:"nodes"`
}

// encoder appends the wire format to b.
type encoder struct{ b []byte }

func (e *encoder) uvarint(v uint64) { e.b = binary.AppendUvarint(e.b, v) }
func (e *encoder) str(s string)     { e.uvarint(uint64(len(s))); e.b = append(e.b, s...) }
func (e *encoder) boolean(v bool) {
	if v {
		e.b = append(e.b, 1)
	} else {
		e.b = append(e.b, 0)
	}
}

// decoder reads the wire format; the first error sticks and later reads
// return zero values.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
	}
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("bad varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) byte1() byte {
	if d.err != nil {
		return 0
	}
	if len(d.b) == 0 {
		d.fail("short frame")
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) boolean() bool {
	switch d.byte1() {
	case 0:
		return false
	case 1:
		return true
	default:
		d.fail("bad bool")
		return false
	}
}

func (d *decoder) str(what string) string {
	n := d.uvarint()
	if d.err != nil {
		return ""
	}
	if n > maxName || n > uint64(len(d.b)) {
		d.fail("%s of %d bytes", what, n)
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}

// count reads a list length; every element takes at least one byte.
func (d *decoder) count(what string, max int) int {
	n := d.uvarint()
	if d.err != nil {
		return 0
	}
	if n > uint64(max) || n > uint64(len(d.b)) {
		d.fail("%d %s", n, what)
		return 0
	}
	return int(n)
}

func (d *decoder) port(what string) int {
	v := d.uvarint()
	if v > 65535 {
		d.fail("%s %d is not a port", what, v)
		return 0
	}
	return int(v)
}

func (d *decoder) header(kind byte) {
	if v := d.byte1(); d.err == nil && v != wireVersion {
		d.fail("wire version %d", v)
	}
	if k := d.byte1(); d.err == nil && k != kind {
		d.fail("frame kind %d, want %d", k, kind)
	}
}

func (d *decoder) end() error {
	if d.err == nil && len(d.b) > 0 {
		d.fail("%d trailing bytes", len(d.b))
	}
	return d.err
}

// EncodeMeta encodes m for memberlist's NodeMeta.
func EncodeMeta(m Meta) ([]byte, error) {
	if len(m.Roles) > maxRoles {
		return nil, fmt.Errorf("%w: %d roles", ErrMetaTooLarge, len(m.Roles))
	}
	for _, s := range append([]string{m.DC, m.Region}, m.Roles...) {
		if len(s) > maxName {
			return nil, fmt.Errorf("%w: %q is longer than %d bytes", ErrMetaTooLarge, s, maxName)
		}
	}
	e := encoder{b: make([]byte, 0, 64)}
	e.b = append(e.b, wireVersion)
	e.str(m.DC)
	e.str(m.Region)
	e.uvarint(uint64(len(m.Roles)))
	for _, r := range m.Roles {
		e.str(r)
	}
	e.boolean(m.Gateway)
	for _, p := range []int{m.HTTPPort, m.GRPCPort, m.InternalPort, m.BrokerPort} {
		e.uvarint(uint64(p))
	}
	e.uvarint(m.Incarnation)
	e.uvarint(m.Version)
	if len(e.b) > memberlist.MetaMaxSize {
		return nil, fmt.Errorf("%w: %d bytes", ErrMetaTooLarge, len(e.b))
	}
	return e.b, nil
}

// DecodeMeta decodes a node meta.
func DecodeMeta(b []byte) (Meta, error) {
	d := decoder{b: b}
	if v := d.byte1(); d.err == nil && v != wireVersion {
		d.fail("meta version %d", v)
	}
	var m Meta
	m.DC = d.str("dc")
	m.Region = d.str("region")
	if n := d.count("roles", maxRoles); n > 0 {
		m.Roles = make([]string, n)
		for i := range m.Roles {
			m.Roles[i] = d.str("role")
		}
	}
	m.Gateway = d.boolean()
	m.HTTPPort = d.port("http port")
	m.GRPCPort = d.port("grpc port")
	m.InternalPort = d.port("internal port")
	m.BrokerPort = d.port("broker port")
	m.Incarnation = d.uvarint()
	m.Version = d.uvarint()
	if d.err == nil && m.DC == "" {
		d.fail("meta without a dc")
	}
	if err := d.end(); err != nil {
		return Meta{}, err
	}
	return m, nil
}

func (e *encoder) entry(n *NodeEntry) {
	e.str(n.Node)
	e.str(n.DC)
	e.str(n.Region)
	e.str(n.Addr)
	e.uvarint(uint64(n.InternalPort))
	e.boolean(n.Gateway)
	e.uvarint(n.Incarnation)
	e.uvarint(n.Version)
	e.uvarint(uint64(len(n.Apps)))
	for _, a := range n.Apps {
		e.str(a.ID)
		e.boolean(a.Healthy)
	}
	e.uvarint(uint64(len(n.Traffic)))
	for _, r := range n.Traffic {
		e.str(r.App)
		e.uvarint(r.Stamp)
		e.uvarint(uint64(len(r.Spec)))
		e.b = append(e.b, r.Spec...)
	}
}

func (d *decoder) entry() NodeEntry {
	var n NodeEntry
	n.Node = d.str("node name")
	n.DC = d.str("dc")
	n.Region = d.str("region")
	n.Addr = d.str("address")
	n.InternalPort = d.port("internal port")
	n.Gateway = d.boolean()
	n.Incarnation = d.uvarint()
	n.Version = d.uvarint()
	if c := d.count("apps", maxApps); c > 0 {
		n.Apps = make([]App, c)
		for i := range n.Apps {
			n.Apps[i] = App{ID: d.str("app-id"), Healthy: d.boolean()}
			if d.err == nil && n.Apps[i].ID == "" {
				d.fail("empty app-id")
			}
		}
	}
	if c := d.count("traffic rules", maxRules); c > 0 {
		n.Traffic = make([]TrafficRule, c)
		for i := range n.Traffic {
			r := TrafficRule{App: d.str("rule app-id"), Stamp: d.uvarint()}
			if l := d.uvarint(); d.err == nil {
				if l > MaxRuleSpec || l > uint64(len(d.b)) {
					d.fail("rule of %d bytes", l)
				} else if l > 0 {
					r.Spec = append([]byte(nil), d.b[:l]...)
					d.b = d.b[l:]
				}
			}
			if d.err == nil && r.App == "" {
				d.fail("rule without an app-id")
			}
			n.Traffic[i] = r
		}
	}
	if d.err == nil && (n.Node == "" || n.DC == "" || n.Addr == "") {
		d.fail("entry without a node, dc or address")
	}
	return n
}

func (e *encoder) view(v *DCView) {
	e.str(v.DC)
	e.str(v.Origin)
	e.uvarint(v.Incarnation)
	e.uvarint(v.Seq)
	e.uvarint(uint64(len(v.Gateways)))
	for _, g := range v.Gateways {
		e.str(g)
	}
	e.uvarint(uint64(len(v.Nodes)))
	for i := range v.Nodes {
		e.entry(&v.Nodes[i])
	}
}

func (d *decoder) view() DCView {
	var v DCView
	v.DC = d.str("dc")
	v.Origin = d.str("origin")
	v.Incarnation = d.uvarint()
	v.Seq = d.uvarint()
	if c := d.count("gateways", maxGws); c > 0 {
		v.Gateways = make([]string, c)
		for i := range v.Gateways {
			v.Gateways[i] = d.str("gateway")
		}
	}
	if c := d.count("nodes", maxNodes); c > 0 {
		v.Nodes = make([]NodeEntry, 0, c)
		for range c {
			n := d.entry()
			if d.err != nil {
				break
			}
			if n.DC != v.DC {
				d.fail("node %q of dc %q in the view of %q", n.Node, n.DC, v.DC)
				break
			}
			v.Nodes = append(v.Nodes, n)
		}
	}
	if d.err == nil && (v.DC == "" || v.Origin == "") {
		d.fail("view without a dc or origin")
	}
	return v
}

// message is one decoded broadcast or reliable message: exactly one of
// entry, view and want is set.
type message struct {
	entry *NodeEntry
	view  *DCView
	want  string
}

func encodeEntry(n *NodeEntry) []byte {
	e := encoder{b: []byte{wireVersion, frameEntry}}
	e.entry(n)
	return e.b
}

func encodeView(v *DCView) []byte {
	e := encoder{b: []byte{wireVersion, frameView}}
	e.view(v)
	return e.b
}

func encodeWant(from string) []byte {
	e := encoder{b: []byte{wireVersion, frameWant}}
	e.str(from)
	return e.b
}

// decodeMessage decodes a frame NotifyMsg received.
func decodeMessage(b []byte) (message, error) {
	d := decoder{b: b}
	if v := d.byte1(); d.err == nil && v != wireVersion {
		d.fail("wire version %d", v)
	}
	var m message
	switch k := d.byte1(); {
	case d.err != nil:
	case k == frameEntry:
		n := d.entry()
		m.entry = &n
	case k == frameView:
		v := d.view()
		m.view = &v
	case k == frameWant:
		m.want = d.str("node name")
		if d.err == nil && m.want == "" {
			d.fail("want without a node")
		}
	default:
		d.fail("frame kind %d", k)
	}
	if err := d.end(); err != nil {
		return message{}, err
	}
	return m, nil
}

// state is what push/pull exchanges: the entries and views a node serves.
type state struct {
	entries []NodeEntry
	views   []DCView
}

func encodeState(s *state) []byte {
	e := encoder{b: []byte{wireVersion, frameState}}
	e.uvarint(uint64(len(s.entries)))
	for i := range s.entries {
		e.entry(&s.entries[i])
	}
	e.uvarint(uint64(len(s.views)))
	for i := range s.views {
		e.view(&s.views[i])
	}
	return e.b
}

func decodeState(b []byte) (state, error) {
	d := decoder{b: b}
	d.header(frameState)
	var s state
	if c := d.count("entries", maxNodes); c > 0 {
		s.entries = make([]NodeEntry, 0, c)
		for range c {
			if n := d.entry(); d.err == nil {
				s.entries = append(s.entries, n)
			}
		}
	}
	if c := d.count("views", maxNodes); c > 0 {
		s.views = make([]DCView, 0, c)
		for range c {
			if v := d.view(); d.err == nil {
				s.views = append(s.views, v)
			}
		}
	}
	if err := d.end(); err != nil {
		return state{}, err
	}
	return s, nil
}
