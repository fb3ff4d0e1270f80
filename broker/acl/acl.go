// Package acl is the broker's authorizer, Kafka's simple ACLs (the
// semantics of Kafka's StandardAuthorizer): bindings of a principal and a
// host to an operation on a resource pattern, allowed or denied; deny by
// default while enabled; super users pass every check.
//
// Decide is the deciding core: a pure function of the bindings and a
// request, table-tested. Store keeps the bindings in a file of the data
// dir and answers the Kafka ACL APIs' filters.
package acl

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"

	"mecha/internal/fsutil"
)

// Resource types, operations, permissions and pattern types, with Kafka's
// numbers (kmsg.ACLResourceType and friends).
const (
	ResourceAny     int8 = 1
	ResourceTopic   int8 = 2
	ResourceGroup   int8 = 3
	ResourceCluster int8 = 4

	OpAny             int8 = 1
	OpAll             int8 = 2
	OpRead            int8 = 3
	OpWrite           int8 = 4
	OpCreate          int8 = 5
	OpDelete          int8 = 6
	OpAlter           int8 = 7
	OpDescribe        int8 = 8
	OpClusterAction   int8 = 9
	OpDescribeConfigs int8 = 10
	OpAlterConfigs    int8 = 11
	OpIdempotentWrite int8 = 12

	PermAny   int8 = 1
	PermDeny  int8 = 2
	PermAllow int8 = 3

	PatternAny      int8 = 1
	PatternMatch    int8 = 2
	PatternLiteral  int8 = 3
	PatternPrefixed int8 = 4
)

// Wildcard is the resource name, principal and host that match all.
const Wildcard = "*"

// Binding is one ACL.
type Binding struct {
	ResourceType int8   `json:"resource_type"`
	ResourceName string `json:"resource_name"`
	PatternType  int8   `json:"pattern_type"`
	Principal    string `json:"principal"` // "User:name" or "User:*"
	Host         string `json:"host"`      // an IP or "*"
	Operation    int8   `json:"operation"`
	Permission   int8   `json:"permission"`
}

// ErrInvalid names what is wrong with a binding or a filter.
var ErrInvalid = errors.New("acl: invalid")

// Validate checks a binding to store.
func (b Binding) Validate() error {
	switch {
	case b.ResourceType < ResourceTopic || b.ResourceType > ResourceCluster:
		return fmt.Errorf("%w: resource type %d (want topic 2, group 3 or cluster 4)", ErrInvalid, b.ResourceType)
	case b.PatternType != PatternLiteral && b.PatternType != PatternPrefixed:
		return fmt.Errorf("%w: pattern type %d (want literal 3 or prefixed 4)", ErrInvalid, b.PatternType)
	case b.ResourceName == "":
		return fmt.Errorf("%w: empty resource name", ErrInvalid)
	case b.ResourceType == ResourceCluster && b.ResourceName != "kafka-cluster":
		return fmt.Errorf("%w: the cluster resource is named kafka-cluster, not %q", ErrInvalid, b.ResourceName)
	case !strings.HasPrefix(b.Principal, "User:") || len(b.Principal) == len("User:"):
		return fmt.Errorf("%w: principal %q (want User:name or User:*)", ErrInvalid, b.Principal)
	case b.Host == "":
		return fmt.Errorf("%w: empty host (use *)", ErrInvalid)
	case b.Operation < OpAll || b.Operation > OpIdempotentWrite:
		return fmt.Errorf("%w: operation %d", ErrInvalid, b.Operation)
	case b.Permission != PermDeny && b.Permission != PermAllow:
		return fmt.Errorf("%w: permission %d (want deny 2 or allow 3)", ErrInvalid, b.Permission)
	}
	return nil
}

// Request is one authorization question.
type Request struct {
	Principal    string // "User:name"
	Host         string // the client's IP
	Operation    int8
	ResourceType int8
	ResourceName string
}

// implied are the operations an allowed operation also allows (Kafka:
// READ, WRITE, DELETE and ALTER imply DESCRIBE; ALTER_CONFIGS implies
// DESCRIBE_CONFIGS).
var implied = map[int8][]int8{
	OpDescribe:        {OpRead, OpWrite, OpDelete, OpAlter},
	OpDescribeConfigs: {OpAlterConfigs},
}

// Decide answers r from bindings: true to allow. Any matching DENY wins;
// else any matching ALLOW (of the operation, ALL, or one implying it)
// allows; else it is denied. Super users are decided before (Authorizer).
func Decide(bindings []Binding, r Request) bool {
	allowed := false
	for _, b := range bindings {
		if !b.matchesResource(r.ResourceType, r.ResourceName) || !b.matchesWho(r.Principal, r.Host) {
			continue
		}
		switch b.Permission {
		case PermDeny:
			if b.Operation == OpAll || b.Operation == r.Operation {
				return false
			}
		case PermAllow:
			if b.Operation == OpAll || b.Operation == r.Operation || slices.Contains(implied[r.Operation], b.Operation) {
				allowed = true
			}
		}
	}
	return allowed
}

// DecideAny answers whether r's operation is allowed on some resource of
// r's type (r.ResourceName is ignored), as Kafka's
// authorizeByResourceType: some matching ALLOW binding of the operation
// (or one implying it) exists, and no matching DENY covers every name
// (a literal * or an empty prefix).
func DecideAny(bindings []Binding, r Request) bool {
	allowed := false
	for _, b := range bindings {
		if b.ResourceType != r.ResourceType || !b.matchesWho(r.Principal, r.Host) {
			continue
		}
		switch b.Permission {
		case PermDeny:
			all := b.PatternType == PatternLiteral && b.ResourceName == Wildcard
			if all && (b.Operation == OpAll || b.Operation == r.Operation) {
				return false
			}
		case PermAllow:
			if b.Operation == OpAll || b.Operation == r.Operation || slices.Contains(implied[r.Operation], b.Operation) {
				allowed = true
			}
		}
	}
	return allowed
}

func (b Binding) matchesResource(typ int8, name string) bool {
	if b.ResourceType != typ {
		return false
	}
	switch b.PatternType {
	case PatternLiteral:
		return b.ResourceName == Wildcard || b.ResourceName == name
	case PatternPrefixed:
		return strings.HasPrefix(name, b.ResourceName)
	}
	return false
}

func (b Binding) matchesWho(principal, host string) bool {
	return (b.Principal == principal || b.Principal == "User:"+Wildcard) && (b.Host == Wildcard || b.Host == host)
}

// Filter selects bindings, as DescribeAcls and DeleteAcls name them:
// zero-valued strings and the ANY values match everything; PatternMatch
// matches the bindings that would apply to the resource name.
type Filter struct {
	ResourceType int8
	ResourceName *string
	PatternType  int8
	Principal    *string
	Host         *string
	Operation    int8
	Permission   int8
}

// Validate checks a filter as Kafka does: no UNKNOWN (0) type, pattern,
// operation or permission, nor one past Kafka's numbers.
func (f Filter) Validate() error {
	switch {
	case f.ResourceType < ResourceAny || f.ResourceType > 7:
		return fmt.Errorf("%w: filter resource type %d", ErrInvalid, f.ResourceType)
	case f.PatternType < PatternAny || f.PatternType > PatternPrefixed:
		return fmt.Errorf("%w: filter pattern type %d", ErrInvalid, f.PatternType)
	case f.Operation < OpAny || f.Operation > 14:
		return fmt.Errorf("%w: filter operation %d", ErrInvalid, f.Operation)
	case f.Permission < PermAny || f.Permission > PermAllow:
		return fmt.Errorf("%w: filter permission %d", ErrInvalid, f.Permission)
	}
	return nil
}

// Matches says whether b is selected.
func (f Filter) Matches(b Binding) bool {
	if f.ResourceType != ResourceAny && f.ResourceType != b.ResourceType {
		return false
	}
	switch f.PatternType {
	case PatternAny:
		if f.ResourceName != nil && *f.ResourceName != b.ResourceName {
			return false
		}
	case PatternMatch:
		if f.ResourceName != nil && !b.matchesResource(b.ResourceType, *f.ResourceName) {
			return false
		}
	default:
		if f.PatternType != b.PatternType || f.ResourceName != nil && *f.ResourceName != b.ResourceName {
			return false
		}
	}
	return (f.Principal == nil || *f.Principal == b.Principal) &&
		(f.Host == nil || *f.Host == b.Host) &&
		(f.Operation == OpAny || f.Operation == b.Operation) &&
		(f.Permission == PermAny || f.Permission == b.Permission)
}

// Store holds the bindings, persisted whole in a file (replaced
// atomically on every change) before a change is answered.
type Store struct {
	path string

	mu       sync.RWMutex
	bindings []Binding
}

// Open reads path (absent: no bindings).
func Open(path string) (*Store, error) {
	s := &Store{path: path}
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return s, nil
	case err != nil:
		return nil, fmt.Errorf("acl: %w", err)
	}
	if err := json.Unmarshal(b, &s.bindings); err != nil {
		return nil, fmt.Errorf("acl: %s: %w", path, err)
	}
	for i, bd := range s.bindings {
		if err := bd.Validate(); err != nil {
			return nil, fmt.Errorf("acl: %s, binding %d: %w", path, i, err)
		}
	}
	return s, nil
}

// Decide answers r from the stored bindings.
func (s *Store) Decide(r Request) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return Decide(s.bindings, r)
}

// DecideAny answers r by DecideAny from the stored bindings.
func (s *Store) DecideAny(r Request) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return DecideAny(s.bindings, r)
}

// Create adds bindings (one already stored is not added twice); each
// answer is nil or why that binding was refused.
func (s *Store) Create(bs []Binding) ([]error, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]error, len(bs))
	next := slices.Clone(s.bindings)
	for i, b := range bs {
		if out[i] = b.Validate(); out[i] != nil {
			continue
		}
		if !slices.Contains(next, b) {
			next = append(next, b)
		}
	}
	if err := s.save(next); err != nil {
		return nil, err
	}
	return out, nil
}

// Describe returns the bindings f selects.
func (s *Store) Describe(f Filter) []Binding {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []Binding
	for _, b := range s.bindings {
		if f.Matches(b) {
			out = append(out, b)
		}
	}
	return out
}

// Delete removes the bindings each filter selects and returns them, per
// filter.
func (s *Store) Delete(fs []Filter) ([][]Binding, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([][]Binding, len(fs))
	var keep []Binding
	for _, b := range s.bindings {
		gone := false
		for i, f := range fs {
			if f.Matches(b) {
				out[i] = append(out[i], b)
				gone = true
			}
		}
		if !gone {
			keep = append(keep, b)
		}
	}
	if err := s.save(keep); err != nil {
		return nil, err
	}
	return out, nil
}

func (s *Store) save(next []Binding) error {
	if next == nil {
		next = []Binding{}
	}
	b, err := json.Marshal(next)
	if err != nil {
		return err
	}
	if err := fsutil.WriteFile(s.path, b); err != nil {
		return fmt.Errorf("acl: %w", err)
	}
	s.bindings = next
	return nil
}
