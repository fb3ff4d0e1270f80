// LeaveGroup (key 13), v0–v4 (flexible from v4).
//
// v0–v2 name one member; v3+ a batch of members by member id and/or
// group.instance.id (static members leave by instance id). The group
// rebalances without them at once. From v3 each member gets its own error
// code and the top-level code stays NONE.
package broker

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"mecha/broker/acl"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
)

func (b *Broker) handleLeaveGroup(c caller, req *kmsg.LeaveGroupRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.LeaveGroupResponse)
	members := req.Members
	if req.Version < 3 {
		m := kmsg.NewLeaveGroupRequestMember()
		m.MemberID = req.MemberID
		members = []kmsg.LeaveGroupRequestMember{m}
	}
	if !b.groupAllowed(c, acl.OpRead, req.Group) {
		resp.ErrorCode = kerr.GroupAuthorizationFailed.Code
		return resp
	}
	if code := b.coordinates(req.Group); code != 0 {
		resp.ErrorCode = code
		return resp
	}
	codes := b.groups.leave(req.Group, members, time.Now())
	if req.Version < 3 {
		resp.ErrorCode = codes[0]
		return resp
	}
	for i, m := range members {
		rm := kmsg.NewLeaveGroupResponseMember()
		rm.MemberID, rm.InstanceID, rm.ErrorCode = m.MemberID, m.InstanceID, codes[i]
		resp.Members = append(resp.Members, rm)
	}
	return resp
}
