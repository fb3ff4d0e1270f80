package accesscontrol

import (
	"errors"
	"strings"
	"testing"
)

func TestAllow(t *testing.T) {
	l, err := Compile(Spec{DefaultAction: "deny", Policies: []Policy{
		{AppID: "web", DefaultAction: "deny", Operations: []Operation{
			{Name: "/orders/*", HTTPVerb: []string{"GET"}, Action: "allow"},
			{Name: "/admin/**", HTTPVerb: []string{"*"}, Action: "deny"},
			{Name: "/health", Action: "allow"},
		}},
		{AppID: "batch", DefaultAction: "allow", Operations: []Operation{{Name: "/orders/**", HTTPVerb: []string{"delete"}, Action: "deny"}}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		caller, verb, path string
		ok                 bool
	}{
		{"web", "GET", "/orders/1", true},
		{"web", "POST", "/orders/1", false},
		{"web", "GET", "/orders/1/items", false}, // * is one segment
		{"web", "GET", "/admin/users/1", false},
		{"web", "PUT", "/health", true},
		{"web", "GET", "/other", false},
		{"batch", "GET", "/anything", true},
		{"batch", "DELETE", "/orders/7/items", false},
		{"stranger", "GET", "/orders/1", false},
	} {
		err := l.Allow(c.caller, c.verb, c.path)
		if (err == nil) != c.ok || (err != nil && !errors.Is(err, ErrDenied)) {
			t.Errorf("%s %s %s: %v, want allowed=%v", c.caller, c.verb, c.path, err, c.ok)
		}
	}
	var none *List
	if err := none.Allow("x", "GET", "/"); err != nil {
		t.Fatalf("no section denies: %v", err)
	}
}

func TestCompileNamesField(t *testing.T) {
	for _, c := range []struct {
		spec Spec
		want string
	}{
		{Spec{DefaultAction: "maybe"}, "spec.accessControl.defaultAction"},
		{Spec{DefaultAction: "allow", Policies: []Policy{{DefaultAction: "allow"}}}, "spec.accessControl.policies[0].appId"},
		{Spec{DefaultAction: "allow", Policies: []Policy{{AppID: "a", DefaultAction: "nope"}}}, "spec.accessControl.policies[0].defaultAction"},
		{Spec{DefaultAction: "allow", Policies: []Policy{{AppID: "a", DefaultAction: "allow", Operations: []Operation{{Name: "x", Action: "allow"}}}}}, "operations[0].name"},
		{Spec{DefaultAction: "allow", Policies: []Policy{{AppID: "a", DefaultAction: "allow", Operations: []Operation{{Name: "/x", Action: "perhaps"}}}}}, "operations[0].action"},
		{Spec{DefaultAction: "allow", Policies: []Policy{{AppID: "a", DefaultAction: "allow"}, {AppID: "a", DefaultAction: "deny"}}}, "policies[1].appId: a second policy"},
	} {
		if _, err := Compile(c.spec); err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: error %v, want it to name %s", c.spec, err, c.want)
		}
	}
}
