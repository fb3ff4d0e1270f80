package acl

import (
	"errors"
	"path/filepath"
	"testing"
)

func allow(typ int8, name string, pat int8, who string, op int8) Binding {
	return Binding{ResourceType: typ, ResourceName: name, PatternType: pat, Principal: who, Host: Wildcard, Operation: op, Permission: PermAllow}
}

func TestDecide(t *testing.T) {
	read := func(topic string) Request {
		return Request{Principal: "User:alice", Host: "10.0.0.1", Operation: OpRead, ResourceType: ResourceTopic, ResourceName: topic}
	}
	deny := allow(ResourceTopic, "secret", PatternLiteral, "User:alice", OpRead)
	deny.Permission = PermDeny
	onHost := allow(ResourceTopic, "orders", PatternLiteral, "User:alice", OpRead)
	onHost.Host = "10.0.0.2"
	for _, tc := range []struct {
		name     string
		bindings []Binding
		req      Request
		want     bool
	}{
		{"nothing allows: denied", nil, read("orders"), false},
		{"literal allow", []Binding{allow(ResourceTopic, "orders", PatternLiteral, "User:alice", OpRead)}, read("orders"), true},
		{"another topic", []Binding{allow(ResourceTopic, "orders", PatternLiteral, "User:alice", OpRead)}, read("payments"), false},
		{"another user", []Binding{allow(ResourceTopic, "orders", PatternLiteral, "User:bob", OpRead)}, read("orders"), false},
		{"any user", []Binding{allow(ResourceTopic, "orders", PatternLiteral, "User:*", OpRead)}, read("orders"), true},
		{"wildcard topic", []Binding{allow(ResourceTopic, "*", PatternLiteral, "User:alice", OpRead)}, read("anything"), true},
		{"prefix", []Binding{allow(ResourceTopic, "ord", PatternPrefixed, "User:alice", OpRead)}, read("orders"), true},
		{"prefix elsewhere", []Binding{allow(ResourceTopic, "ord", PatternPrefixed, "User:alice", OpRead)}, read("my-orders"), false},
		{"ALL allows read", []Binding{allow(ResourceTopic, "orders", PatternLiteral, "User:alice", OpAll)}, read("orders"), true},
		{"write does not allow read", []Binding{allow(ResourceTopic, "orders", PatternLiteral, "User:alice", OpWrite)}, read("orders"), false},
		{"write implies describe", []Binding{allow(ResourceTopic, "orders", PatternLiteral, "User:alice", OpWrite)},
			Request{Principal: "User:alice", Host: "h", Operation: OpDescribe, ResourceType: ResourceTopic, ResourceName: "orders"}, true},
		{"alter configs implies describe configs", []Binding{allow(ResourceTopic, "orders", PatternLiteral, "User:alice", OpAlterConfigs)},
			Request{Principal: "User:alice", Host: "h", Operation: OpDescribeConfigs, ResourceType: ResourceTopic, ResourceName: "orders"}, true},
		{"a group binding is not a topic's", []Binding{allow(ResourceGroup, "orders", PatternLiteral, "User:alice", OpRead)}, read("orders"), false},
		{"deny wins over allow", []Binding{allow(ResourceTopic, "*", PatternLiteral, "User:*", OpAll), deny}, read("secret"), false},
		{"deny of another topic", []Binding{allow(ResourceTopic, "*", PatternLiteral, "User:*", OpAll), deny}, read("orders"), true},
		{"host must match", []Binding{onHost}, read("orders"), false},
	} {
		if got := Decide(tc.bindings, tc.req); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestValidate(t *testing.T) {
	good := allow(ResourceTopic, "orders", PatternLiteral, "User:alice", OpRead)
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, mutate := range map[string]func(*Binding){
		"resource type":  func(b *Binding) { b.ResourceType = ResourceAny },
		"pattern":        func(b *Binding) { b.PatternType = PatternMatch },
		"empty name":     func(b *Binding) { b.ResourceName = "" },
		"cluster name":   func(b *Binding) { b.ResourceType = ResourceCluster },
		"principal":      func(b *Binding) { b.Principal = "alice" },
		"host":           func(b *Binding) { b.Host = "" },
		"operation":      func(b *Binding) { b.Operation = OpAny },
		"permission any": func(b *Binding) { b.Permission = PermAny },
	} {
		b := good
		mutate(&b)
		if err := b.Validate(); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestStore(t *testing.T) {
	path := filepath.Join(t.TempDir(), "acls.json")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	a := allow(ResourceTopic, "orders", PatternLiteral, "User:alice", OpRead)
	b := allow(ResourceGroup, "g", PatternPrefixed, "User:bob", OpRead)
	bad := a
	bad.Permission = PermAny
	errs, err := s.Create([]Binding{a, b, a, bad})
	if err != nil {
		t.Fatal(err)
	}
	if errs[0] != nil || errs[1] != nil || errs[2] != nil || !errors.Is(errs[3], ErrInvalid) {
		t.Fatalf("create answers %v", errs)
	}
	if got := s.Describe(Filter{ResourceType: ResourceAny, PatternType: PatternAny, Operation: OpAny, Permission: PermAny}); len(got) != 2 {
		t.Fatalf("described %v, want the two bindings once each", got)
	}
	name := "g-1"
	if got := s.Describe(Filter{ResourceType: ResourceGroup, ResourceName: &name, PatternType: PatternMatch, Operation: OpAny, Permission: PermAny}); len(got) != 1 || got[0] != b {
		t.Fatalf("match filter: %v", got)
	}
	if !s.Decide(Request{Principal: "User:alice", Host: "h", Operation: OpRead, ResourceType: ResourceTopic, ResourceName: "orders"}) {
		t.Fatal("alice may not read orders")
	}
	// Kept across a reopen.
	s2, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	alice := "User:alice"
	gone, err := s2.Delete([]Filter{{ResourceType: ResourceAny, PatternType: PatternAny, Principal: &alice, Operation: OpAny, Permission: PermAny}})
	if err != nil || len(gone) != 1 || len(gone[0]) != 1 || gone[0][0] != a {
		t.Fatalf("delete: %v %v", gone, err)
	}
	s3, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := s3.Describe(Filter{ResourceType: ResourceAny, PatternType: PatternAny, Operation: OpAny, Permission: PermAny}); len(got) != 1 || got[0] != b {
		t.Fatalf("after delete and reopen: %v", got)
	}
}

func TestDecideAny(t *testing.T) {
	write := Request{Principal: "User:alice", Host: "h", Operation: OpWrite, ResourceType: ResourceTopic}
	denyAll := allow(ResourceTopic, "*", PatternLiteral, "User:alice", OpWrite)
	denyAll.Permission = PermDeny
	denyOne := allow(ResourceTopic, "secret", PatternLiteral, "User:alice", OpWrite)
	denyOne.Permission = PermDeny
	for _, tc := range []struct {
		name     string
		bindings []Binding
		want     bool
	}{
		{"nothing", nil, false},
		{"write on one topic", []Binding{allow(ResourceTopic, "orders", PatternLiteral, "User:alice", OpWrite)}, true},
		{"write by prefix", []Binding{allow(ResourceTopic, "o", PatternPrefixed, "User:*", OpWrite)}, true},
		{"read only", []Binding{allow(ResourceTopic, "orders", PatternLiteral, "User:alice", OpRead)}, false},
		{"write on a group", []Binding{allow(ResourceGroup, "orders", PatternLiteral, "User:alice", OpAll)}, false},
		{"another user", []Binding{allow(ResourceTopic, "orders", PatternLiteral, "User:bob", OpWrite)}, false},
		{"a deny of one topic leaves the others", []Binding{allow(ResourceTopic, "orders", PatternLiteral, "User:alice", OpWrite), denyOne}, true},
		{"a deny of every topic", []Binding{allow(ResourceTopic, "orders", PatternLiteral, "User:alice", OpWrite), denyAll}, false},
	} {
		if got := DecideAny(tc.bindings, write); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}
