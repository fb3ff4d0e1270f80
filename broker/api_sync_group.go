// SyncGroup (key 14), v0–v5 (flexible from v4).
//
// The leader sends the assignment it computed; the broker relays each
// member's part. Followers that sync first wait for the leader. v5 echoes
// the protocol type and name.
//
// Errors: UNKNOWN_MEMBER_ID, ILLEGAL_GENERATION, FENCED_INSTANCE_ID,
// REBALANCE_IN_PROGRESS when a new rebalance began.
package broker

import (
	"mecha/broker/acl"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func (b *Broker) handleSyncGroup(c caller, req *kmsg.SyncGroupRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.SyncGroupResponse)
	if !b.groupAllowed(c, acl.OpRead, req.Group) {
		resp.ErrorCode = kerr.GroupAuthorizationFailed.Code
		return resp
	}
	if code := b.coordinates(req.Group); code != 0 {
		resp.ErrorCode = code
		return resp
	}
	res, wait, g := b.groups.sync(req, time.Now())
	if wait != nil {
		select {
		case res = <-wait:
		case <-c.done:
			res = syncResult{code: kerr.RebalanceInProgress.Code}
		}
	}
	resp.ErrorCode, resp.MemberAssignment = res.code, res.assignment
	if res.code == 0 && g != nil && req.Version >= 5 {
		b.groups.mu.Lock()
		resp.ProtocolType, resp.Protocol = strPtr(g.protocolType), strPtr(g.protocol)
		b.groups.mu.Unlock()
	}
	return resp
}
