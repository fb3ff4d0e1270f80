// JoinGroup (key 11), v0–v7 (flexible from v6).
//
// The classic group protocol; the state machine is in groups.go. v4+: a
// member joining without an id gets MEMBER_ID_REQUIRED with an id to
// rejoin with (KIP-394). v5+: group.instance.id makes a static member
// (KIP-345). The join waits until every known member has rejoined or the
// rebalance timeout (v1+, else the session timeout) passes; the leader's
// answer lists the members and their metadata for the chosen protocol.
//
// Errors: INVALID_GROUP_ID, INVALID_SESSION_TIMEOUT outside the broker's
// bounds, INCONSISTENT_GROUP_PROTOCOL, UNKNOWN_MEMBER_ID,
// FENCED_INSTANCE_ID, REBALANCE_IN_PROGRESS (a second join replaced this
// one), COORDINATOR_NOT_AVAILABLE while shutting down.
package broker

import (
	"mecha/broker/acl"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func (b *Broker) handleJoinGroup(c caller, req *kmsg.JoinGroupRequest, h requestHeader) kmsg.Response {
	if !b.groupAllowed(c, acl.OpRead, req.Group) {
		r := req.ResponseKind().(*kmsg.JoinGroupResponse)
		r.ErrorCode, r.Generation = kerr.GroupAuthorizationFailed.Code, -1
		return r
	}
	if code := b.coordinates(req.Group); code != 0 {
		r := req.ResponseKind().(*kmsg.JoinGroupResponse)
		r.ErrorCode, r.Generation = code, -1
		return r
	}
	resp, wait := b.groups.join(req, h.clientID, c.host, time.Now())
	if resp != nil {
		return resp
	}
	select {
	case r := <-wait:
		return r.resp
	case <-c.done:
		// The reply is lost with the connection (or the in-process
		// caller's context); the member will be expired by its session
		// timeout.
		r := req.ResponseKind().(*kmsg.JoinGroupResponse)
		r.ErrorCode = kerr.RebalanceInProgress.Code
		return r
	}
}
