// FindCoordinator (key 10), v0–v3.
//
// The broker coordinates every group itself, so it answers with its own
// address for any group key. Transaction coordinators (key type 1) get
// COORDINATOR_NOT_AVAILABLE: transactions are not implemented. v4+
// (batched keys) is not served.
package broker

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
	"mecha/broker/acl"
)

func (b *Broker) handleFindCoordinator(c caller, req *kmsg.FindCoordinatorRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.FindCoordinatorResponse)
	if req.CoordinatorType != 0 {
		resp.ErrorCode, resp.NodeID, resp.Port = kerr.CoordinatorNotAvailable.Code, -1, -1
		msg := "transactions are not supported"
		resp.ErrorMessage = &msg
		return resp
	}
	if req.CoordinatorKey == "" {
		resp.ErrorCode, resp.NodeID, resp.Port = kerr.InvalidGroupID.Code, -1, -1
		return resp
	}
	if !b.groupAllowed(c, acl.OpDescribe, req.CoordinatorKey) {
		resp.ErrorCode, resp.NodeID, resp.Port = kerr.GroupAuthorizationFailed.Code, -1, -1
		return resp
	}
	if b.cl != nil {
		member, code := b.coordinatorOf(req.CoordinatorKey)
		host, port, ok := b.cl.cfg.Addr(member)
		if code == 0 && !ok {
			code = kerr.CoordinatorNotAvailable.Code
		}
		if code != 0 {
			resp.ErrorCode, resp.NodeID, resp.Port = code, -1, -1
			return resp
		}
		resp.NodeID, resp.Host, resp.Port = NodeID(member), host, port
		return resp
	}
	resp.NodeID, resp.Host, resp.Port = b.cfg.NodeID, b.host, b.port
	return resp
}
