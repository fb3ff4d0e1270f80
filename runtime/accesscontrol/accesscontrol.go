// Package accesscontrol is Dapr's service invocation access control: the
// accessControl section of a Configuration, applied by the called runtime
// to every call another app makes to its app.
//
// A call from app C with verb V to path P is decided by C's policy when
// there is one, else by the global defaultAction: the first of the
// policy's operations whose name matches P and whose httpVerb lists V (or
// "*") decides; when none does, the policy's defaultAction. Operation
// names are paths where "*" matches one segment and "**" any number of
// them ("/orders/*", "/admin/**").
package accesscontrol

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// ErrInvalid is wrapped by every invalid section.
var ErrInvalid = errors.New("invalid accessControl")

// ErrDenied is wrapped by every refusal.
var ErrDenied = errors.New("access denied")

// Spec is the accessControl section as written.
type Spec struct {
	DefaultAction string   `json:"defaultAction"`
	TrustDomain   string   `json:"trustDomain,omitempty"`
	Policies      []Policy `json:"policies,omitempty"`
}

// Policy is one caller's rules.
type Policy struct {
	AppID         string      `json:"appId"`
	DefaultAction string      `json:"defaultAction"`
	TrustDomain   string      `json:"trustDomain,omitempty"`
	Namespace     string      `json:"namespace,omitempty"`
	Operations    []Operation `json:"operations,omitempty"`
}

// Operation is one rule of a policy.
type Operation struct {
	Name     string   `json:"name"`
	HTTPVerb []string `json:"httpVerb,omitempty"`
	Action   string   `json:"action"`
}

// List decides calls; the zero value (no section) allows everything.
type List struct {
	allowByDefault bool
	set            bool
	policies       map[string]*policy
}

type policy struct {
	allow bool
	ops   []op
}

type op struct {
	segs  []string
	verbs []string // upper case; nil or "*" = any
	allow bool
}

func action(field, a string) (bool, error) {
	switch strings.ToLower(a) {
	case "allow":
		return true, nil
	case "deny":
		return false, nil
	}
	return false, fmt.Errorf("%w: %s: want allow or deny, got %q", ErrInvalid, field, a)
}

// Compile validates s, naming the bad field, and returns its list.
func Compile(s Spec) (*List, error) {
	l := &List{set: true, policies: map[string]*policy{}}
	var err error
	if l.allowByDefault, err = action("spec.accessControl.defaultAction", s.DefaultAction); err != nil {
		return nil, err
	}
	for i, p := range s.Policies {
		field := fmt.Sprintf("spec.accessControl.policies[%d]", i)
		if p.AppID == "" {
			return nil, fmt.Errorf("%w: %s.appId: must be set", ErrInvalid, field)
		}
		if _, dup := l.policies[p.AppID]; dup {
			return nil, fmt.Errorf("%w: %s.appId: a second policy for %q", ErrInvalid, field, p.AppID)
		}
		cp := &policy{}
		if cp.allow, err = action(field+".defaultAction", p.DefaultAction); err != nil {
			return nil, err
		}
		for j, o := range p.Operations {
			of := fmt.Sprintf("%s.operations[%d]", field, j)
			if !strings.HasPrefix(o.Name, "/") {
				return nil, fmt.Errorf("%w: %s.name: want a path such as /orders/*, got %q", ErrInvalid, of, o.Name)
			}
			c := op{segs: strings.Split(strings.Trim(o.Name, "/"), "/")}
			if c.allow, err = action(of+".action", o.Action); err != nil {
				return nil, err
			}
			for _, v := range o.HTTPVerb {
				c.verbs = append(c.verbs, strings.ToUpper(v))
			}
			cp.ops = append(cp.ops, c)
		}
		l.policies[p.AppID] = cp
	}
	return l, nil
}

// Allow decides a call from caller with verb to path; a refusal wraps
// ErrDenied and says which rule refused.
func (l *List) Allow(caller, verb, path string) error {
	if l == nil || !l.set {
		return nil
	}
	p := l.policies[caller]
	if p == nil {
		if l.allowByDefault {
			return nil
		}
		return fmt.Errorf("%w: caller %q has no policy and the default action is deny", ErrDenied, caller)
	}
	segs := strings.Split(strings.Trim(path, "/"), "/")
	for _, o := range p.ops {
		if !match(o.segs, segs) || !(len(o.verbs) == 0 || slices.Contains(o.verbs, "*") || slices.Contains(o.verbs, strings.ToUpper(verb))) {
			continue
		}
		if o.allow {
			return nil
		}
		return fmt.Errorf("%w: %s %s is denied to %q", ErrDenied, verb, path, caller)
	}
	if p.allow {
		return nil
	}
	return fmt.Errorf("%w: %s %s matches no operation allowed to %q, whose default action is deny", ErrDenied, verb, path, caller)
}

func match(pat, segs []string) bool {
	for i, p := range pat {
		if p == "**" {
			return true
		}
		if i >= len(segs) || (p != "*" && p != segs[i]) {
			return false
		}
	}
	return len(pat) == len(segs)
}
