// Metadata (key 3), v0–v9.
//
// The broker names itself as the only broker, the controller and the
// leader of every partition, with itself as the one replica and ISR.
//
// Which topics: v0 answers every topic for an empty list; from v1 a null
// list means every topic and an empty list none. Requested topics that do
// not exist are created when auto-creation is on (and, from v4, the client
// allows it); otherwise they get UNKNOWN_TOPIC_OR_PARTITION, and invalid
// names INVALID_TOPIC_EXCEPTION.
//
// v10+ (topic ids) is not served.
package broker

import (
	"errors"
	"mecha/broker/acl"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

const clusterID = "mecha-embedded"

func (b *Broker) handleMetadata(c caller, req *kmsg.MetadataRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.MetadataResponse)
	br := kmsg.NewMetadataResponseBroker()
	br.NodeID, br.Host, br.Port = b.cfg.NodeID, b.host, b.port
	resp.Brokers = []kmsg.MetadataResponseBroker{br}
	cid := clusterID
	resp.ClusterID = &cid
	resp.ControllerID = b.cfg.NodeID
	if b.cl != nil {
		b.clusterMetadata(c, req, resp)
		return resp
	}

	var names []string
	all := req.Topics == nil || (req.Version == 0 && len(req.Topics) == 0)
	if all {
		names = b.topics.names()
	} else {
		for _, t := range req.Topics {
			if t.Topic != nil {
				names = append(names, *t.Topic)
			}
		}
	}
	auto := b.cfg.AutoCreateTopics && (req.Version < 4 || req.AllowAutoTopicCreation)
	for _, name := range names {
		mt := kmsg.NewMetadataResponseTopic()
		n := name
		mt.Topic = &n
		if !b.topicAllowed(c, acl.OpDescribe, name) {
			if all {
				continue // a listing shows only the topics c may see
			}
			mt.ErrorCode = kerr.TopicAuthorizationFailed.Code
			resp.Topics = append(resp.Topics, mt)
			continue
		}
		create := auto && !all
		if create && b.topics.get(name) == nil && !b.mayCreateTopic(c, name) {
			mt.ErrorCode = kerr.TopicAuthorizationFailed.Code
			resp.Topics = append(resp.Topics, mt)
			continue
		}
		t, err := b.topics.ensure(name, create, b.cfg.DefaultPartitions)
		switch {
		case errors.Is(err, errInvalidTopic):
			mt.ErrorCode = kerr.InvalidTopicException.Code
		case err != nil || t == nil:
			mt.ErrorCode = kerr.UnknownTopicOrPartition.Code
		default:
			for p := int32(0); p < t.numPartitions(); p++ {
				mp := kmsg.NewMetadataResponseTopicPartition()
				mp.Partition, mp.Leader, mp.LeaderEpoch = p, b.cfg.NodeID, 0
				mp.Replicas = []int32{b.cfg.NodeID}
				mp.ISR = []int32{b.cfg.NodeID}
				mt.Partitions = append(mt.Partitions, mp)
			}
		}
		resp.Topics = append(resp.Topics, mt)
	}
	return resp
}
