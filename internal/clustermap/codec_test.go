package clustermap

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
	"time"
)

// sampleCommands holds one command of every kind, fields set.
func sampleCommands() []Command {
	return []Command{
		Bootstrap{ClusterID: "c", Replicas: 3, RebuildAfter: time.Minute},
		MemberJoin{ID: "a", Addr: "10.0.0.1:7000", DC: "dc1", Roles: []string{"data", "server"}, At: 1},
		MemberAlive{ID: "a", At: 2},
		MemberDead{ID: "a", At: 3},
		MemberDrain{ID: "a", Cancel: true},
		MemberLeave{ID: "a", At: 4},
		Tick{Now: 5},
		AssignSlots{Replicas: [][]string{{"a", "b"}, {"b", "a"}}},
		ISRChange{Ref: s0, ISR: []string{"a", "b"}, Epoch: 7},
		MoveStart{Ref: p0, From: "a", To: "d", FromLatest: true},
		MoveProgress{Ref: p0, From: "a", To: "d", Phase: PhaseTailing},
		MoveDone{Ref: p0, To: "d"},
		MoveAbort{Ref: p0, From: "a", To: "d"},
		LeaderTransfer{Ref: s1, To: "c", Epoch: 2},
		ElectLeaders{Refs: []Ref{s0, p0}},
		RemoveReplica{Ref: s0, Member: "b"},
		CreateTopic{Name: "t", Partitions: 2, Config: TopicConfig{ReplicationFactor: 2, MinInSyncReplicas: 1, UncleanLeaderElection: true}, Assignment: [][]string{{"a", "b"}, {"b", "a"}}, Overrides: map[string]string{"retention.ms": "60000"}},
		DeleteTopic{Name: "t"},
		ReassignPartition{Topic: "t", Partition: 1, Replicas: []string{"a", "b"}, FromLatest: true},
		SetTopicConfig{Name: "t", MinInSyncReplicas: 2, UncleanLeaderElection: ptr(false), ReplaceOverrides: true, Overrides: map[string]string{"retention.ms": "1000", "segment.bytes": "4096"}},
		AddPartitions{Name: "t", Count: 4, Assignment: [][]string{{"a", "b"}, {"b", "a"}}},
	}
}

// TestCodecRoundTrip: every kind decodes to what was encoded, and equal
// commands encode to equal bytes.
func TestCodecRoundTrip(t *testing.T) {
	cmds := sampleCommands()
	if len(cmds) != int(kindEnd)-1 {
		t.Fatalf("%d sample commands for %d kinds", len(cmds), kindEnd-1)
	}
	for _, c := range cmds {
		b, err := Encode(c)
		if err != nil {
			t.Fatalf("%T: %v", c, err)
		}
		if b[0] != formatVersion || Kind(b[1]) != c.Kind() {
			t.Fatalf("%T: header % x", c, b[:2])
		}
		got, err := Decode(b)
		if err != nil {
			t.Fatalf("%T: %v", c, err)
		}
		if !reflect.DeepEqual(got, c) {
			t.Fatalf("round trip %T: %+v, want %+v", c, got, c)
		}
		b2, _ := Encode(got)
		if !bytes.Equal(b, b2) {
			t.Fatalf("%T encodes two ways: %s, %s", c, b, b2)
		}
	}
}

// TestDecodeRefuses: what a runtime must not guess at.
func TestDecodeRefuses(t *testing.T) {
	good, _ := Encode(Tick{Now: 1})
	for name, b := range map[string][]byte{
		"empty":         nil,
		"one byte":      {formatVersion},
		"version":       append([]byte{9}, good[1:]...),
		"kind 0":        {formatVersion, 0, '{', '}'},
		"unknown kind":  {formatVersion, byte(kindEnd), '{', '}'},
		"unknown field": append([]byte{formatVersion, byte(KindTick)}, `{"now":1,"later":2}`...),
		"trailing":      append(bytes.Clone(good), `{}`...),
		"not json":      {formatVersion, byte(KindTick), 'x'},
		"wrong type":    append([]byte{formatVersion, byte(KindTick)}, `{"now":"1"}`...),
		"bad phase":     append([]byte{formatVersion, byte(KindMoveProgress)}, `{"ref":{"index":0},"to":"a","phase":"flying"}`...),
	} {
		if _, err := Decode(b); !errors.Is(err, ErrBadCommand) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := Encode(nil); !errors.Is(err, ErrBadCommand) {
		t.Errorf("encode nil: %v", err)
	}
}

// TestMapSnapshot: a map survives EncodeMap and DecodeMap, and a corrupt
// snapshot is refused.
func TestMapSnapshot(t *testing.T) {
	m := base(t)
	m, _ = Apply(m, MoveStart{Ref: s0, From: "a", To: "d"})
	m, _ = Apply(m, MemberDrain{ID: "b"})
	b, err := EncodeMap(m)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeMap(b)
	if err != nil {
		t.Fatal(err)
	}
	if fingerprint(got) != fingerprint(m) {
		t.Fatal("snapshot round trip differs")
	}
	b2, _ := EncodeMap(got)
	if !bytes.Equal(b, b2) {
		t.Fatal("a map encodes two ways")
	}
	// A replica that is no member.
	bad := bytes.Replace(b, []byte(`"replicas":["a","b","c"`), []byte(`"replicas":["a","b","x"`), 1)
	if _, err := DecodeMap(bad); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("corrupt snapshot: %v", err)
	}
	if _, err := DecodeMap(b[:len(b)/2]); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("cut snapshot: %v", err)
	}
	if _, err := DecodeMap(nil); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("empty snapshot: %v", err)
	}
	empty, err := EncodeMap(New())
	if err != nil {
		t.Fatal(err)
	}
	if m0, err := DecodeMap(empty); err != nil || m0.Bootstrapped() {
		t.Fatalf("empty map: %v", err)
	}
}

// FuzzDecode feeds Decode anything: it must not panic, what it accepts
// must encode to bytes that decode and encode to the same bytes (an
// empty list and a missing one may both read as nil), and Apply must take it on a
// real map without panicking, either refusing it with a sentinel or
// returning a map that passes Check.
func FuzzDecode(f *testing.F) {
	for _, c := range sampleCommands() {
		b, _ := Encode(c)
		f.Add(b)
	}
	f.Add([]byte{formatVersion, byte(KindCreateTopic)})
	f.Add(append([]byte{formatVersion, byte(KindCreateTopic)}, `{"name":"x","partitions":9999,"config":{"replication_factor":3}}`...))
	f.Add(append([]byte{formatVersion, byte(KindISRChange)}, `{"ref":{"topic":"t","index":-1},"isr":null,"epoch":18446744073709551615}`...))
	m := base(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Decode(b)
		if err != nil {
			if !errors.Is(err, ErrBadCommand) {
				t.Fatalf("decode error %v is not ErrBadCommand", err)
			}
			return
		}
		b2, err := Encode(c)
		if err != nil {
			t.Fatalf("%T %+v decodes but does not encode: %v", c, c, err)
		}
		c2, err := Decode(b2)
		if err != nil {
			t.Fatalf("%T: re-decode: %v", c, err)
		}
		if b3, _ := Encode(c2); !bytes.Equal(b2, b3) {
			t.Fatalf("%T: %s, then %s", c, b2, b3)
		}
		before := fingerprint(m)
		next, err := Apply(m, c)
		if fingerprint(m) != before {
			t.Fatalf("%T %+v wrote to the map it was applied to", c, c)
		}
		if err != nil {
			if next != m {
				t.Fatalf("%T refused but returned another map", c)
			}
			for _, s := range sentinels {
				if errors.Is(err, s) {
					return
				}
			}
			t.Fatalf("%T %+v: %v wraps no sentinel", c, c, err)
		}
		if err := next.Check(); err != nil {
			t.Fatalf("%T %+v: %v", c, c, err)
		}
		if next != m {
			checkTransition(t, m, next, c, true)
		}
	})
}
