// Heartbeat (key 12), v0–v4 (flexible from v4).
//
// Keeps a member's session alive. REBALANCE_IN_PROGRESS tells the member
// to rejoin; UNKNOWN_MEMBER_ID, ILLEGAL_GENERATION and FENCED_INSTANCE_ID
// as in Kafka.
package broker

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"mecha/broker/acl"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
)

func (b *Broker) handleHeartbeat(c caller, req *kmsg.HeartbeatRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.HeartbeatResponse)
	if !b.groupAllowed(c, acl.OpRead, req.Group) {
		resp.ErrorCode = kerr.GroupAuthorizationFailed.Code
		return resp
	}
	if code := b.coordinates(req.Group); code != 0 {
		resp.ErrorCode = code
		return resp
	}
	resp.ErrorCode = b.groups.heartbeat(req, time.Now())
	return resp
}
