package broker

import (
	"github.com/twmb/franz-go/pkg/kmsg"
)

// caller is where a request comes from: a client connection, or a
// component in the broker's own process (Request).
type caller struct {
	// done is closed when the caller is gone (its connection closed, its
	// context ended): a request waiting for others (a fetch's long poll,
	// a join or sync waiting for the group) gives up then.
	done <-chan struct{}
	// host is the client's host as group descriptions show it.
	host string
	// principal is who the client is for ACLs (User:name, or
	// User:ANONYMOUS); empty for the broker's own process, trusted.
	principal string
	// ip is the client's address for ACLs' host.
	ip string
}

// gone reports whether the caller has gone.
func (c caller) gone() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// handle runs one request and returns its response; nil means no response
// (a Produce with acks=0).
func (b *Broker) handle(c caller, h requestHeader, req kmsg.Request) kmsg.Response {
	switch r := req.(type) {
	case *kmsg.ApiVersionsRequest:
		return b.handleApiVersions(r)
	case *kmsg.MetadataRequest:
		return b.handleMetadata(c, r)
	case *kmsg.ProduceRequest:
		return b.handleProduce(c, r, h)
	case *kmsg.FetchRequest:
		return b.handleFetch(c, r)
	case *kmsg.ListOffsetsRequest:
		return b.handleListOffsets(c, r)
	case *kmsg.FindCoordinatorRequest:
		return b.handleFindCoordinator(c, r)
	case *kmsg.JoinGroupRequest:
		return b.handleJoinGroup(c, r, h)
	case *kmsg.SyncGroupRequest:
		return b.handleSyncGroup(c, r)
	case *kmsg.HeartbeatRequest:
		return b.handleHeartbeat(c, r)
	case *kmsg.LeaveGroupRequest:
		return b.handleLeaveGroup(c, r)
	case *kmsg.OffsetCommitRequest:
		return b.handleOffsetCommit(c, r)
	case *kmsg.OffsetFetchRequest:
		return b.handleOffsetFetch(c, r)
	case *kmsg.DescribeGroupsRequest:
		return b.handleDescribeGroups(c, r)
	case *kmsg.ListGroupsRequest:
		return b.handleListGroups(c, r)
	case *kmsg.CreateTopicsRequest:
		return b.handleCreateTopics(c, r)
	case *kmsg.DeleteTopicsRequest:
		return b.handleDeleteTopics(c, r)
	case *kmsg.CreatePartitionsRequest:
		return b.handleCreatePartitions(c, r)
	case *kmsg.DescribeConfigsRequest:
		return b.handleDescribeConfigs(c, r)
	case *kmsg.InitProducerIDRequest:
		return b.handleInitProducerID(c, r)
	case *kmsg.DeleteRecordsRequest:
		return b.handleDeleteRecords(c, r)
	case *kmsg.AlterConfigsRequest:
		return b.handleAlterConfigs(c, r)
	case *kmsg.IncrementalAlterConfigsRequest:
		return b.handleIncrementalAlterConfigs(c, r)
	case *kmsg.DescribeLogDirsRequest:
		return b.handleDescribeLogDirs(c, r)
	case *kmsg.OffsetDeleteRequest:
		return b.handleOffsetDelete(c, r)
	case *kmsg.ElectLeadersRequest:
		return b.handleElectLeaders(c, r)
	case *kmsg.AlterPartitionAssignmentsRequest:
		return b.handleAlterPartitionAssignments(c, r)
	case *kmsg.ListPartitionReassignmentsRequest:
		return b.handleListPartitionReassignments(c, r)
	case *kmsg.DeleteGroupsRequest:
		return b.handleDeleteGroups(c, r)
	case *kmsg.OffsetForLeaderEpochRequest:
		return b.handleOffsetForLeaderEpoch(c, r)
	case *kmsg.CreateACLsRequest:
		return b.handleCreateACLs(c, r)
	case *kmsg.DescribeACLsRequest:
		return b.handleDescribeACLs(c, r)
	case *kmsg.DeleteACLsRequest:
		return b.handleDeleteACLs(c, r)
	case *kmsg.DescribeClusterRequest:
		return b.handleDescribeCluster(c, r)
	}
	// parseRequest admits only keys in supportedAPIs, each handled above.
	panic("broker: no handler for " + kmsg.NameForKey(req.Key()))
}
