package broker

// Authorization: Kafka's simple ACLs (package acl), checked per request
// as Kafka's brokers check them (KIP-11 and the per-API operations of
// Kafka's request handlers). Enabled by Config.ACLs: then every client
// request is denied unless a binding allows it, and super users pass
// every check. A client's principal is User:<its SASL user>, or
// User:ANONYMOUS on a listener without SASL. The broker's own process
// (pubsub.mecha in-process, bindings, stream jobs: local.go) is trusted.

import (
	"fmt"
	"path/filepath"
	"strings"

	"mecha/broker/acl"
)

// anonymous is the principal of a client that did not authenticate.
const anonymous = "User:ANONYMOUS"

// clusterResource is the name of the one cluster resource.
const clusterResource = "kafka-cluster"

// authorizer decides requests when ACLs are on.
type authorizer struct {
	store *acl.Store
	super map[string]bool
}

func openAuthorizer(cfg Config) (*authorizer, error) {
	if !cfg.ACLs {
		return nil, nil
	}
	st, err := acl.Open(filepath.Join(cfg.DataDir, "acls.json"))
	if err != nil {
		return nil, err
	}
	a := &authorizer{store: st, super: map[string]bool{}}
	for _, u := range cfg.SuperUsers {
		a.super[principalOf(u)] = true
	}
	return a, nil
}

// principalOf is name as a principal: User:name (a name given with its
// User: prefix keeps it).
func principalOf(name string) string {
	if strings.HasPrefix(name, "User:") {
		return name
	}
	return "User:" + name
}

// allowed says whether c may do op on the resource. Without ACLs, and
// for the broker's own process and super users, everything is.
func (b *Broker) allowed(c caller, op, typ int8, name string) bool {
	if b.trusted(c) {
		return true
	}
	ok := b.acls.store.Decide(acl.Request{Principal: c.principal, Host: c.ip, Operation: op, ResourceType: typ, ResourceName: name})
	if !ok {
		b.log.Debug("broker: denied", "principal", c.principal, "host", c.ip, "operation", op, "resource_type", typ, "resource", name)
	}
	return ok
}

// trusted says whether c passes every check: ACLs are off, or c is the
// broker's own process or a super user.
func (b *Broker) trusted(c caller) bool {
	return b.acls == nil || c.principal == "" || b.acls.super[c.principal]
}

func (b *Broker) topicAllowed(c caller, op int8, topic string) bool {
	return b.allowed(c, op, acl.ResourceTopic, topic)
}

func (b *Broker) groupAllowed(c caller, op int8, group string) bool {
	return b.allowed(c, op, acl.ResourceGroup, group)
}

func (b *Broker) clusterAllowed(c caller, op int8) bool {
	return b.allowed(c, op, acl.ResourceCluster, clusterResource)
}

// allowedOnSome says whether c may do op on some resource of type typ
// (Kafka's authorizeByResourceType, as KIP-679 uses for idempotent
// producers).
func (b *Broker) allowedOnSome(c caller, op, typ int8) bool {
	return b.trusted(c) || b.acls.store.DecideAny(acl.Request{Principal: c.principal, Host: c.ip, Operation: op, ResourceType: typ})
}

// mayCreateTopic says whether c may create topic: CREATE on the cluster
// or on the topic, as Kafka checks for CreateTopics and auto-creation.
func (b *Broker) mayCreateTopic(c caller, topic string) bool {
	return b.clusterAllowed(c, acl.OpCreate) || b.topicAllowed(c, acl.OpCreate, topic)
}

// superUsersFlag is a comma- or semicolon-separated list of user names
// (Kafka's super.users takes "User:a;User:b").
type superUsersFlag struct{ v *[]string }

func (f superUsersFlag) String() string {
	if f.v == nil {
		return ""
	}
	return strings.Join(*f.v, ",")
}

func (f superUsersFlag) Set(s string) error {
	var out []string
	for _, u := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ';' }) {
		u = strings.TrimSpace(u)
		if u == "" || u == "User:" {
			continue
		}
		if strings.Contains(u, ":") && !strings.HasPrefix(u, "User:") {
			return fmt.Errorf("super user %q: only User: principals exist here", u)
		}
		out = append(out, u)
	}
	*f.v = out
	return nil
}
