// DescribeCluster (key 60), v0–v1 (flexible).
//
// The cluster as Metadata shows it: this broker, which is also the
// controller, and the cluster id. v1's EndpointType 1 (brokers) is the
// only endpoint type served; 2 (controllers) gets UNSUPPORTED_ENDPOINT_TYPE.
// Authorized operations are not computed (no ACLs): the field says so
// with Kafka's "not requested" value.
package broker

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
	"mecha/broker/acl"
)

func (b *Broker) handleDescribeCluster(c caller, req *kmsg.DescribeClusterRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.DescribeClusterResponse)
	resp.ClusterAuthorizedOperations = -2147483648
	if req.Version >= 1 {
		resp.EndpointType = req.EndpointType
		if req.EndpointType != 1 {
			resp.ErrorCode = kerr.UnsupportedEndpointType.Code
			msg := "only broker endpoints (EndpointType 1) are served"
			resp.ErrorMessage = &msg
			return resp
		}
	}
	if !b.clusterAllowed(c, acl.OpDescribe) {
		resp.ErrorCode = kerr.ClusterAuthorizationFailed.Code
		return resp
	}
	resp.ClusterID = clusterID
	resp.ControllerID = b.cfg.NodeID
	br := kmsg.NewDescribeClusterResponseBroker()
	br.NodeID, br.Host, br.Port = b.cfg.NodeID, b.host, b.port
	resp.Brokers = []kmsg.DescribeClusterResponseBroker{br}
	if b.cl != nil {
		b.clusterDescribe(resp)
	}
	return resp
}
