// DescribeConfigs (key 32), v0–v4 (flexible from v4).
//
// Topics (resource type 2) answer the five configs the broker honours,
// each marked as a topic override (source DYNAMIC_TOPIC_CONFIG) or a
// default (DEFAULT_CONFIG, IsDefault). The broker (type 4) answers its own
// defaults. ConfigNames narrows the answer. Synonyms (v1+) and
// documentation (v3+) are not given. Other resource types get
// INVALID_REQUEST; unknown topics UNKNOWN_TOPIC_OR_PARTITION.
package broker

import (
	"sort"
	"strconv"

	"mecha/broker/acl"
	"mecha/broker/storage"
	"mecha/internal/clustermap"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// configEntry is one config value and where it comes from (Kafka's
// ConfigSource: 1 dynamic topic, 4 static broker, 5 default).
type configEntry struct {
	name, value string
	source      kmsg.ConfigSource
}

// topicConfigEntries lists a topic's configs: overrides, then defaults.
func topicConfigEntries(base storage.Config, overrides map[string]string) []configEntry {
	defaults := map[string]string{
		"cleanup.policy":    "delete",
		"retention.ms":      strconv.FormatInt(base.RetentionMs, 10),
		"retention.bytes":   strconv.FormatInt(base.RetentionBytes, 10),
		"segment.bytes":     strconv.FormatInt(base.SegmentBytes, 10),
		"max.message.bytes": strconv.Itoa(base.MaxBatchBytes),
	}
	var out []configEntry
	for _, name := range topicConfigNames {
		if v, ok := overrides[name]; ok {
			out = append(out, configEntry{name, v, kmsg.ConfigSourceDynamicTopicConfig})
		} else {
			out = append(out, configEntry{name, defaults[name], kmsg.ConfigSourceDefaultConfig})
		}
	}
	return out
}

func (b *Broker) brokerConfigEntries() []configEntry {
	c := b.cfg
	e := []configEntry{
		{"auto.create.topics.enable", strconv.FormatBool(c.AutoCreateTopics), kmsg.ConfigSourceStaticBrokerConfig},
		{"num.partitions", strconv.Itoa(int(c.DefaultPartitions)), kmsg.ConfigSourceStaticBrokerConfig},
		{"socket.request.max.bytes", strconv.Itoa(int(c.MaxRequestBytes)), kmsg.ConfigSourceStaticBrokerConfig},
		{"log.segment.bytes", strconv.FormatInt(c.Log.SegmentBytes, 10), kmsg.ConfigSourceStaticBrokerConfig},
		{"log.retention.ms", strconv.FormatInt(c.Log.RetentionMs, 10), kmsg.ConfigSourceStaticBrokerConfig},
		{"log.retention.bytes", strconv.FormatInt(c.Log.RetentionBytes, 10), kmsg.ConfigSourceStaticBrokerConfig},
		{"message.max.bytes", strconv.Itoa(c.Log.MaxBatchBytes), kmsg.ConfigSourceStaticBrokerConfig},
		{"log.flush.interval.ms", strconv.FormatInt(c.FlushInterval.Milliseconds(), 10), kmsg.ConfigSourceStaticBrokerConfig},
	}
	sort.Slice(e, func(i, j int) bool { return e[i].name < e[j].name })
	return e
}

func (b *Broker) handleDescribeConfigs(c caller, req *kmsg.DescribeConfigsRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.DescribeConfigsResponse)
	for _, rr := range req.Resources {
		sr := kmsg.NewDescribeConfigsResponseResource()
		sr.ResourceType, sr.ResourceName = rr.ResourceType, rr.ResourceName
		var entries []configEntry
		switch rr.ResourceType {
		case kmsg.ConfigResourceTypeTopic:
			t := b.topics.get(rr.ResourceName)
			if !b.topicAllowed(c, acl.OpDescribeConfigs, rr.ResourceName) {
				sr.ErrorCode = kerr.TopicAuthorizationFailed.Code
				break
			}
			var tp *clustermap.Topic
			if b.cl != nil {
				// The map's configs, which every broker applies.
				tp = b.cl.cfg.Maps.Map().Topic(rr.ResourceName)
			}
			if tp == nil && (t == nil || b.cl != nil) {
				sr.ErrorCode = kerr.UnknownTopicOrPartition.Code
				msg := "unknown topic " + rr.ResourceName
				sr.ErrorMessage = &msg
				break
			}
			if tp != nil {
				entries = b.clusterConfigEntries(tp)
				break
			}
			t.mu.RLock()
			entries = topicConfigEntries(b.cfg.Log, t.configs)
			t.mu.RUnlock()
		case kmsg.ConfigResourceTypeBroker:
			if !b.clusterAllowed(c, acl.OpDescribeConfigs) {
				sr.ErrorCode = kerr.ClusterAuthorizationFailed.Code
				break
			}
			entries = b.brokerConfigEntries()
		default:
			sr.ErrorCode = kerr.InvalidRequest.Code
			msg := "only topic and broker configs can be described"
			sr.ErrorMessage = &msg
		}
		for _, e := range entries {
			if len(rr.ConfigNames) > 0 && !containsString(rr.ConfigNames, e.name) {
				continue
			}
			c := kmsg.NewDescribeConfigsResponseResourceConfig()
			v := e.value
			c.Name, c.Value, c.Source = e.name, &v, e.source
			c.IsDefault = e.source == kmsg.ConfigSourceDefaultConfig
			c.ReadOnly = rr.ResourceType == kmsg.ConfigResourceTypeBroker
			sr.Configs = append(sr.Configs, c)
		}
		resp.Resources = append(resp.Resources, sr)
	}
	return resp
}

func containsString(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
