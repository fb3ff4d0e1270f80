// DeleteGroups (key 42), v0–v2 (flexible from v2).
//
// A group with no members (Empty, or only committed offsets left from
// before a restart) is deleted with its committed offsets. A group with
// members gets NON_EMPTY_GROUP, an unknown one GROUP_ID_NOT_FOUND, as in
// Kafka.
package broker

import (
	"errors"
	"mecha/broker/acl"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func (b *Broker) handleDeleteGroups(c caller, req *kmsg.DeleteGroupsRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.DeleteGroupsResponse)
	for _, name := range req.Groups {
		r := kmsg.NewDeleteGroupsResponseGroup()
		r.Group = name
		if !b.groupAllowed(c, acl.OpDelete, name) {
			r.ErrorCode = kerr.GroupAuthorizationFailed.Code
		} else if code := b.coordinates(name); code != 0 {
			r.ErrorCode = code
		} else if code := b.replicateGroupDeletion(name); code != 0 {
			r.ErrorCode = code
		} else if err := b.groups.deleteGroup(name); err != nil {
			var ke *kerr.Error
			if errors.As(err, &ke) {
				r.ErrorCode = ke.Code
			} else {
				r.ErrorCode = kerr.UnknownServerError.Code
				b.log.Error("broker: deleting a group's offsets", "group", name, "err", err)
			}
		}
		resp.Groups = append(resp.Groups, r)
	}
	return resp
}
