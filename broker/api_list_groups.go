// ListGroups (key 16), v0–v4 (flexible from v3).
//
// Every group the coordinator knows, including groups that only have
// committed offsets (state Empty). v4 filters by state, case-insensitively
// as Kafka does.
package broker

import (
	"mecha/broker/acl"
	"strings"

	"github.com/twmb/franz-go/pkg/kmsg"
)

func (b *Broker) handleListGroups(c caller, req *kmsg.ListGroupsRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.ListGroupsResponse)
	// DESCRIBE on the cluster lists every group; else only the groups
	// c may describe (as Kafka).
	all := b.clusterAllowed(c, acl.OpDescribe)
	for _, g := range b.groups.list() {
		if len(req.StatesFilter) > 0 && !containsFold(req.StatesFilter, g.GroupState) {
			continue
		}
		if !all && !b.groupAllowed(c, acl.OpDescribe, g.Group) {
			continue
		}
		resp.Groups = append(resp.Groups, g)
	}
	return resp
}

func containsFold(list []string, s string) bool {
	for _, v := range list {
		if strings.EqualFold(v, s) {
			return true
		}
	}
	return false
}
