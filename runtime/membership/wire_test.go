package membership

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"reflect"
	"strings"
	"testing"

	"github.com/hashicorp/memberlist"
)

func sampleMeta() Meta {
	return Meta{DC: "dc-a", Region: "eu", Roles: []string{"broker", "crux"}, Gateway: true,
		HTTPPort: 3500, GRPCPort: 50001, InternalPort: 50002, BrokerPort: 9092, Incarnation: 1 << 62, Version: 7}
}

func sampleEntry() NodeEntry {
	return NodeEntry{Node: "n1", DC: "dc-a", Region: "eu", Addr: "10.0.0.1", InternalPort: 50002, Gateway: true,
		Incarnation: 12, Version: 3, Apps: []App{{ID: "orders", Healthy: true}, {ID: "pay"}}}
}

func sampleView() DCView {
	e := sampleEntry()
	return DCView{DC: "dc-a", Origin: "gw", Incarnation: 4, Seq: 9, Gateways: []string{"10.0.0.1:50002"}, Nodes: []NodeEntry{e, {Node: "n2", DC: "dc-a", Addr: "10.0.0.2"}}}
}

func TestMetaRoundTrip(t *testing.T) {
	for _, m := range []Meta{sampleMeta(), {DC: "x"}} {
		b, err := EncodeMeta(m)
		if err != nil {
			t.Fatal(err)
		}
		got, err := DecodeMeta(b)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, m) {
			t.Fatalf("got %+v, want %+v", got, m)
		}
	}
}

func TestMetaLimits(t *testing.T) {
	m := sampleMeta()
	m.Roles = make([]string, maxRoles)
	for i := range m.Roles {
		m.Roles[i] = strings.Repeat("r", maxName)
	}
	if _, err := EncodeMeta(m); !errors.Is(err, ErrMetaTooLarge) {
		t.Fatalf("oversized meta: %v", err)
	}
	m.Roles = []string{strings.Repeat("r", maxName+1)}
	if _, err := EncodeMeta(m); !errors.Is(err, ErrMetaTooLarge) {
		t.Fatalf("oversized role: %v", err)
	}
	// The largest meta Validate lets through fits.
	cfg := DefaultConfig()
	cfg.DC, cfg.Region = strings.Repeat("d", maxName), strings.Repeat("r", maxName)
	cfg.Roles = []string{strings.Repeat("x", 100), strings.Repeat("y", 100)}
	b, err := EncodeMeta(cfg.meta(^uint64(0), ^uint64(0)))
	if err != nil || len(b) > memberlist.MetaMaxSize {
		t.Fatalf("%d bytes, %v", len(b), err)
	}
}

func TestMessagesRoundTrip(t *testing.T) {
	e, v := sampleEntry(), sampleView()
	for _, tc := range []struct {
		b    []byte
		want message
	}{
		{encodeEntry(&e), message{entry: &e}},
		{encodeView(&v), message{view: &v}},
		{encodeWant("n9"), message{want: "n9"}},
	} {
		got, err := decodeMessage(tc.b)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Fatalf("got %+v, want %+v", got, tc.want)
		}
	}
	s := state{entries: []NodeEntry{e}, views: []DCView{v}}
	got, err := decodeState(encodeState(&s))
	if err != nil || !reflect.DeepEqual(got, s) {
		t.Fatalf("state %+v, %v", got, err)
	}
}

func TestDecodersRejectMalformedFrames(t *testing.T) {
	e := sampleEntry()
	good := encodeEntry(&e)
	v := sampleView()
	v.Nodes[1].DC = "dc-other"
	for name, b := range map[string][]byte{
		"empty":             nil,
		"version only":      {wireVersion},
		"unknown version":   append([]byte{9}, good[1:]...),
		"unknown kind":      {wireVersion, 99},
		"truncated":         good[:len(good)-1],
		"trailing":          append(bytes.Clone(good), 0),
		"huge string":       {wireVersion, frameWant, 0xff, 0xff, 0xff, 0xff, 0x0f},
		"bad bool":          bytes.Replace(bytes.Clone(good), []byte("orders\x01"), []byte("orders\x02"), 1),
		"view of mixed DCs": encodeView(&v),
		"entry without dc":  encodeEntry(&NodeEntry{Node: "x", Addr: "a"}),
		"empty want":        encodeWant(""),
		"state as message":  encodeState(&state{}),
	} {
		if _, err := decodeMessage(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := decodeState(good); !errors.Is(err, ErrMalformed) {
		t.Errorf("an entry decoded as state: %v", err)
	}
	if _, err := DecodeMeta([]byte{wireVersion, 0}); !errors.Is(err, ErrMalformed) {
		t.Errorf("meta without dc: %v", err)
	}
}

func TestNodeDropsMalformedGossip(t *testing.T) {
	log, buf := testLogger(t, slog.LevelWarn)
	cfg := testConfig("n", "dc1")
	n, err := Start(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Shutdown()
	v := n.Version()
	d := &delegate{n: n, p: lanPool}
	d.NotifyMsg([]byte{wireVersion, frameEntry, 0xff})
	d.NotifyMsg(nil)
	d.MergeRemoteState([]byte("garbage"), true)
	ev := &events{n: n, p: lanPool}
	ev.NotifyJoin(&memberlist.Node{Name: "bad-meta", Meta: []byte{1, 2, 3}})
	ev.NotifyUpdate(&memberlist.Node{Name: "bad-meta", Meta: nil})
	// A valid entry of another DC arrives on the LAN: ignored, not news.
	e := sampleEntry()
	d.NotifyMsg(encodeEntry(&e))
	if n.Version() != v || len(n.Members()) != 0 {
		t.Fatalf("malformed gossip changed the catalog: version %d -> %d, members %v", v, n.Version(), n.Members())
	}
	logs := buf.String()
	for _, want := range []string{"dropped a malformed gossip message", "dropped malformed push/pull state", "ignoring a member with malformed meta"} {
		if !strings.Contains(logs, want) {
			t.Errorf("no %q in the logs:\n%s", want, logs)
		}
	}
	if ctx := context.Background(); n.WaitJoined(ctx) != nil {
		t.Fatal("a seed is not joined")
	}
}

func TestSnapshotDecoding(t *testing.T) {
	s := Snapshot{Format: snapshotFormat, Node: "n", DC: "dc-a", Entries: []NodeEntry{sampleEntry()}, Views: []DCView{sampleView()}}
	b, _ := json.Marshal(s)
	got, err := decodeSnapshot(b)
	if err != nil || !reflect.DeepEqual(got, s) {
		t.Fatalf("%+v, %v", got, err)
	}
	for name, b := range map[string]string{
		"not json":       "{",
		"wrong format":   `{"format":2,"dc":"x"}`,
		"no dc":          `{"format":1}`,
		"bad entry":      `{"format":1,"dc":"x","entries":[{"node":""}]}`,
		"port too large": `{"format":1,"dc":"x","entries":[{"node":"a","dc":"x","addr":"h","internalPort":70000}]}`,
	} {
		if _, err := decodeSnapshot([]byte(b)); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func FuzzMeta(f *testing.F) {
	b, _ := EncodeMeta(sampleMeta())
	f.Add(b)
	f.Add([]byte{wireVersion, 1, 'x', 0, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeMeta(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		again, err := EncodeMeta(m)
		if err != nil {
			t.Fatalf("decoded meta does not encode: %v", err)
		}
		if m2, err := DecodeMeta(again); err != nil || !reflect.DeepEqual(m, m2) {
			t.Fatalf("round trip: %+v vs %+v, %v", m, m2, err)
		}
	})
}

func FuzzBroadcast(f *testing.F) {
	e, v := sampleEntry(), sampleView()
	f.Add(encodeEntry(&e))
	f.Add(encodeView(&v))
	f.Add(encodeWant("n"))
	f.Add([]byte{wireVersion, frameView, 1, 'a', 1, 'b', 0, 0, 0xff, 0xff, 0x03})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeMessage(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		var again []byte
		switch {
		case m.entry != nil:
			again = encodeEntry(m.entry)
		case m.view != nil:
			again = encodeView(m.view)
		default:
			again = encodeWant(m.want)
		}
		// Varints may arrive non-canonical; what they mean must survive.
		if m2, err := decodeMessage(again); err != nil || !reflect.DeepEqual(m, m2) {
			t.Fatalf("round trip: %+v vs %+v, %v", m, m2, err)
		}
		// A decoded message must be safe to feed to a catalog.
		c := testCatalog()
		if m.entry != nil {
			c.Apply(EntryReceived{Entry: *m.entry})
		}
		if m.view != nil {
			c.Apply(ViewReceived{View: *m.view})
			c.Instances("orders")
		}
	})
}

func FuzzRemoteState(f *testing.F) {
	s := state{entries: []NodeEntry{sampleEntry()}, views: []DCView{sampleView()}}
	f.Add(encodeState(&s))
	f.Add(encodeState(&state{}))
	f.Add([]byte{wireVersion, frameState, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := decodeState(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		if s2, err := decodeState(encodeState(&s)); err != nil || !reflect.DeepEqual(s, s2) {
			t.Fatalf("round trip: %+v vs %+v, %v", s, s2, err)
		}
		c := testCatalog()
		for _, e := range s.entries {
			c.Apply(EntryReceived{Entry: e})
		}
		for _, v := range s.views {
			c.Apply(ViewReceived{View: v})
		}
		c.Apply(Synced{})
	})
}

func FuzzCache(f *testing.F) {
	b, _ := json.Marshal(Snapshot{Format: snapshotFormat, DC: "dc-a", Entries: []NodeEntry{sampleEntry()}, Views: []DCView{sampleView()}})
	f.Add(b)
	f.Add([]byte(`{"format":1,"dc":"x","entries":[{"node":"a","dc":"x","addr":"h"}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := decodeSnapshot(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		c := testCatalog()
		c.Apply(CacheLoaded{Snapshot: s})
		c.Instances("orders")
	})
}
