package broker

// CreateAcls, DescribeAcls and DeleteAcls manage the ACL bindings
// (authorize.go): ALTER on the cluster to create and delete, DESCRIBE to
// list. With ACLs off they answer SECURITY_DISABLED, as a Kafka broker
// without an authorizer does.

import (
	"fmt"

	"mecha/broker/acl"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// aclsUnavailable is the code and message for an ACL request that cannot
// be served to c: ACLs off, or c not allowed op on the cluster.
func (b *Broker) aclsUnavailable(c caller, op int8) (int16, *string) {
	if b.acls == nil {
		msg := "ACLs are not enabled on this broker (--acls / --broker-acls)"
		return kerr.SecurityDisabled.Code, &msg
	}
	if !b.clusterAllowed(c, op) {
		return kerr.ClusterAuthorizationFailed.Code, nil
	}
	return 0, nil
}

func (b *Broker) handleCreateACLs(c caller, req *kmsg.CreateACLsRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.CreateACLsResponse)
	code, msg := b.aclsUnavailable(c, acl.OpAlter)
	bindings := make([]acl.Binding, len(req.Creations))
	for i, cr := range req.Creations {
		bindings[i] = acl.Binding{
			ResourceType: int8(cr.ResourceType), ResourceName: cr.ResourceName, PatternType: int8(cr.ResourcePatternType),
			Principal: cr.Principal, Host: cr.Host, Operation: int8(cr.Operation), Permission: int8(cr.PermissionType),
		}
	}
	var errs []error
	if code == 0 {
		var err error
		if errs, err = b.acls.store.Create(bindings); err != nil {
			b.log.Error("broker: saving ACLs", "err", err)
			code, msg = kerr.UnknownServerError.Code, strPtr(err.Error())
		}
	}
	for i := range req.Creations {
		r := kmsg.NewCreateACLsResponseResult()
		switch {
		case code != 0:
			r.ErrorCode, r.ErrorMessage = code, msg
		case errs[i] != nil:
			r.ErrorCode, r.ErrorMessage = kerr.InvalidRequest.Code, strPtr(errs[i].Error())
		default:
			b.log.Info("broker: ACL created", "by", c.principal, "acl", fmt.Sprintf("%+v", bindings[i]))
		}
		resp.Results = append(resp.Results, r)
	}
	return resp
}

func (b *Broker) handleDescribeACLs(c caller, req *kmsg.DescribeACLsRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.DescribeACLsResponse)
	if resp.ErrorCode, resp.ErrorMessage = b.aclsUnavailable(c, acl.OpDescribe); resp.ErrorCode != 0 {
		return resp
	}
	f := acl.Filter{
		ResourceType: int8(req.ResourceType), ResourceName: req.ResourceName, PatternType: int8(req.ResourcePatternType),
		Principal: req.Principal, Host: req.Host, Operation: int8(req.Operation), Permission: int8(req.PermissionType),
	}
	if err := f.Validate(); err != nil {
		resp.ErrorCode, resp.ErrorMessage = kerr.InvalidRequest.Code, strPtr(err.Error())
		return resp
	}
	type resource struct {
		typ     int8
		name    string
		pattern int8
	}
	at := map[resource]int{}
	for _, bd := range b.acls.store.Describe(f) {
		k := resource{bd.ResourceType, bd.ResourceName, bd.PatternType}
		i, ok := at[k]
		if !ok {
			r := kmsg.NewDescribeACLsResponseResource()
			r.ResourceType, r.ResourceName, r.ResourcePatternType = kmsg.ACLResourceType(k.typ), k.name, kmsg.ACLResourcePatternType(k.pattern)
			i = len(resp.Resources)
			at[k] = i
			resp.Resources = append(resp.Resources, r)
		}
		a := kmsg.NewDescribeACLsResponseResourceACL()
		a.Principal, a.Host, a.Operation, a.PermissionType = bd.Principal, bd.Host, kmsg.ACLOperation(bd.Operation), kmsg.ACLPermissionType(bd.Permission)
		resp.Resources[i].ACLs = append(resp.Resources[i].ACLs, a)
	}
	return resp
}

func (b *Broker) handleDeleteACLs(c caller, req *kmsg.DeleteACLsRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.DeleteACLsResponse)
	code, msg := b.aclsUnavailable(c, acl.OpAlter)
	filters := make([]acl.Filter, 0, len(req.Filters))
	bad := make([]error, len(req.Filters))
	for i, fr := range req.Filters {
		f := acl.Filter{
			ResourceType: int8(fr.ResourceType), ResourceName: fr.ResourceName, PatternType: int8(fr.ResourcePatternType),
			Principal: fr.Principal, Host: fr.Host, Operation: int8(fr.Operation), Permission: int8(fr.PermissionType),
		}
		if bad[i] = f.Validate(); bad[i] != nil {
			f = acl.Filter{ResourceType: -1} // matches nothing
		}
		filters = append(filters, f)
	}
	var deleted [][]acl.Binding
	if code == 0 {
		var err error
		if deleted, err = b.acls.store.Delete(filters); err != nil {
			b.log.Error("broker: saving ACLs", "err", err)
			code, msg = kerr.UnknownServerError.Code, strPtr(err.Error())
		}
	}
	for i := range req.Filters {
		r := kmsg.NewDeleteACLsResponseResult()
		switch {
		case code != 0:
			r.ErrorCode, r.ErrorMessage = code, msg
		case bad[i] != nil:
			r.ErrorCode, r.ErrorMessage = kerr.InvalidRequest.Code, strPtr(bad[i].Error())
		default:
			for _, bd := range deleted[i] {
				m := kmsg.NewDeleteACLsResponseResultMatchingACL()
				m.ResourceType, m.ResourceName, m.ResourcePatternType = kmsg.ACLResourceType(bd.ResourceType), bd.ResourceName, kmsg.ACLResourcePatternType(bd.PatternType)
				m.Principal, m.Host, m.Operation, m.PermissionType = bd.Principal, bd.Host, kmsg.ACLOperation(bd.Operation), kmsg.ACLPermissionType(bd.Permission)
				r.MatchingACLs = append(r.MatchingACLs, m)
				b.log.Info("broker: ACL deleted", "by", c.principal, "acl", fmt.Sprintf("%+v", bd))
			}
		}
		resp.Results = append(resp.Results, r)
	}
	return resp
}
