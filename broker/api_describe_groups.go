// DescribeGroups (key 15), v0–v5 (flexible from v5).
//
// A group's state, protocol and members with their metadata and current
// assignment. An unknown group is answered as Kafka does: state "Dead",
// no error. Authorized operations (v3+) are not computed (no ACLs).
package broker

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
	"mecha/broker/acl"
)

func (b *Broker) handleDescribeGroups(c caller, req *kmsg.DescribeGroupsRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.DescribeGroupsResponse)
	for _, name := range req.Groups {
		if !b.groupAllowed(c, acl.OpDescribe, name) {
			g := kmsg.NewDescribeGroupsResponseGroup()
			g.Group, g.ErrorCode, g.AuthorizedOperations = name, kerr.GroupAuthorizationFailed.Code, -2147483648
			resp.Groups = append(resp.Groups, g)
			continue
		}
		if code := b.coordinates(name); code != 0 {
			g := kmsg.NewDescribeGroupsResponseGroup()
			g.Group, g.ErrorCode, g.AuthorizedOperations = name, code, -2147483648
			resp.Groups = append(resp.Groups, g)
			continue
		}
		g := b.groups.describe(name)
		g.AuthorizedOperations = -2147483648
		resp.Groups = append(resp.Groups, g)
	}
	return resp
}
