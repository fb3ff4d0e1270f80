// AlterConfigs (key 33), v0–v2 (flexible from v2), and
// IncrementalAlterConfigs (key 44), v0–v1 (flexible from v1).
//
// Topics (resource type 2) take the configs the broker honours (see
// DescribeConfigs); the new overrides are written to the topic's
// topic.json before the answer, and the topic's partitions use them at
// once (a smaller segment.bytes applies from the next segment, a
// retention from the next retention check). AlterConfigs replaces a
// topic's overrides with the request's; IncrementalAlterConfigs applies
// SET (0) and DELETE (1, back to the default) one by one; APPEND (2) and
// SUBTRACT (3) are for list configs and get INVALID_REQUEST. ValidateOnly
// checks without changing. A bad name or value gets INVALID_CONFIG naming
// it, an unknown topic UNKNOWN_TOPIC_OR_PARTITION. Broker configs (type
// 4) are the runtime's flags: INVALID_CONFIG; other types INVALID_REQUEST.
//
// In the broker cluster the control plane's map holds a topic's configs
// (and min.insync.replicas and unclean.leader.election.enable as well):
// the change is proposed there and every broker applies it.
package broker

import (
	"errors"
	"fmt"
	"maps"
	"mecha/broker/acl"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// alterOutcome is one resource's answer: an error code and message.
type alterOutcome struct {
	code int16
	msg  *string
}

// alterTopicConfigs runs change on a copy of the topic's overrides and
// installs the result; change returns an outcome to refuse with.
func (b *Broker) alterTopicConfigs(c caller, resType kmsg.ConfigResourceType, name string, validateOnly bool, change func(map[string]string) *alterOutcome) alterOutcome {
	fail := func(code int16, format string, args ...any) alterOutcome {
		m := fmt.Sprintf(format, args...)
		return alterOutcome{code, &m}
	}
	switch resType {
	case kmsg.ConfigResourceTypeTopic:
		if !b.topicAllowed(c, acl.OpAlterConfigs, name) {
			return fail(kerr.TopicAuthorizationFailed.Code, "ALTER_CONFIGS on topic %s is not allowed", name)
		}
	case kmsg.ConfigResourceTypeBroker:
		if !b.clusterAllowed(c, acl.OpAlterConfigs) {
			return fail(kerr.ClusterAuthorizationFailed.Code, "ALTER_CONFIGS on the cluster is not allowed")
		}
		return fail(kerr.InvalidConfig.Code, "broker configs are the runtime's flags and cannot be altered")
	default:
		return fail(kerr.InvalidRequest.Code, "resource type %d: only topics (2) are altered", resType)
	}
	if b.cl != nil {
		return b.clusterAlterConfigs(name, validateOnly, change)
	}
	err := b.topics.alterConfigs(name, validateOnly, func(cur map[string]string) (map[string]string, error) {
		next := maps.Clone(cur)
		if next == nil {
			next = map[string]string{}
		}
		if o := change(next); o != nil {
			return nil, &refusal{*o}
		}
		return next, nil
	})
	var r *refusal
	switch {
	case err == nil:
		return alterOutcome{}
	case errors.As(err, &r):
		return r.alterOutcome
	case errors.Is(err, errUnknownTopic):
		return fail(kerr.UnknownTopicOrPartition.Code, "%v", err)
	case errors.Is(err, errInvalidConfig):
		return fail(kerr.InvalidConfig.Code, "%v", err)
	}
	b.log.Error("broker: altering topic configs", "topic", name, "err", err)
	return fail(kerr.UnknownServerError.Code, "%v", err)
}

// refusal carries a change's refusal through alterConfigs.
type refusal struct{ alterOutcome }

func (r *refusal) Error() string { return *r.msg }

func (b *Broker) handleAlterConfigs(c caller, req *kmsg.AlterConfigsRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.AlterConfigsResponse)
	for _, res := range req.Resources {
		o := b.alterTopicConfigs(c, res.ResourceType, res.ResourceName, req.ValidateOnly, func(m map[string]string) *alterOutcome {
			clear(m)
			for _, c := range res.Configs {
				if c.Value == nil {
					continue
				}
				m[c.Name] = *c.Value
			}
			return nil
		})
		r := kmsg.NewAlterConfigsResponseResource()
		r.ErrorCode, r.ErrorMessage, r.ResourceType, r.ResourceName = o.code, o.msg, res.ResourceType, res.ResourceName
		resp.Resources = append(resp.Resources, r)
	}
	return resp
}

func (b *Broker) handleIncrementalAlterConfigs(c caller, req *kmsg.IncrementalAlterConfigsRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.IncrementalAlterConfigsResponse)
	for _, res := range req.Resources {
		o := b.alterTopicConfigs(c, res.ResourceType, res.ResourceName, req.ValidateOnly, func(m map[string]string) *alterOutcome {
			for _, c := range res.Configs {
				switch c.Op {
				case kmsg.IncrementalAlterConfigOpSet:
					if c.Value == nil {
						msg := fmt.Sprintf("SET %s without a value", c.Name)
						return &alterOutcome{kerr.InvalidConfig.Code, &msg}
					}
					m[c.Name] = *c.Value
				case kmsg.IncrementalAlterConfigOpDelete:
					delete(m, c.Name)
				default:
					msg := fmt.Sprintf("%s %s: APPEND and SUBTRACT apply to list configs, and none of the supported configs is one", c.Op, c.Name)
					return &alterOutcome{kerr.InvalidRequest.Code, &msg}
				}
			}
			return nil
		})
		r := kmsg.NewIncrementalAlterConfigsResponseResource()
		r.ErrorCode, r.ErrorMessage, r.ResourceType, r.ResourceName = o.code, o.msg, res.ResourceType, res.ResourceName
		resp.Resources = append(resp.Resources, r)
	}
	return resp
}
