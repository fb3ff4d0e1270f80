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
		return b.handleMetadata(r)
	case *kmsg.ProduceRequest:
		return b.handleProduce(r, h)
	case *kmsg.FetchRequest:
		return b.handleFetch(c, r)
	case *kmsg.ListOffsetsRequest:
		return b.handleListOffsets(r)
	case *kmsg.FindCoordinatorRequest:
		return b.handleFindCoordinator(r)
	case *kmsg.JoinGroupRequest:
		return b.handleJoinGroup(c, r, h)
	case *kmsg.SyncGroupRequest:
		return b.handleSyncGroup(c, r)
	case *kmsg.HeartbeatRequest:
		return b.handleHeartbeat(r)
	case *kmsg.LeaveGroupRequest:
		return b.handleLeaveGroup(r)
	case *kmsg.OffsetCommitRequest:
		return b.handleOffsetCommit(r)
	case *kmsg.OffsetFetchRequest:
		return b.handleOffsetFetch(r)
	case *kmsg.DescribeGroupsRequest:
		return b.handleDescribeGroups(r)
	case *kmsg.ListGroupsRequest:
		return b.handleListGroups(r)
	case *kmsg.CreateTopicsRequest:
		return b.handleCreateTopics(r)
	case *kmsg.DeleteTopicsRequest:
		return b.handleDeleteTopics(r)
	case *kmsg.CreatePartitionsRequest:
		return b.handleCreatePartitions(r)
	case *kmsg.DescribeConfigsRequest:
		return b.handleDescribeConfigs(r)
	case *kmsg.InitProducerIDRequest:
		return b.handleInitProducerID(r)
	case *kmsg.DeleteRecordsRequest:
		return b.handleDeleteRecords(r)
	case *kmsg.AlterConfigsRequest:
		return b.handleAlterConfigs(r)
	case *kmsg.IncrementalAlterConfigsRequest:
		return b.handleIncrementalAlterConfigs(r)
	case *kmsg.DescribeLogDirsRequest:
		return b.handleDescribeLogDirs(r)
	case *kmsg.OffsetDeleteRequest:
		return b.handleOffsetDelete(r)
	case *kmsg.ElectLeadersRequest:
		return b.handleElectLeaders(r)
	case *kmsg.AlterPartitionAssignmentsRequest:
		return b.handleAlterPartitionAssignments(r)
	case *kmsg.ListPartitionReassignmentsRequest:
		return b.handleListPartitionReassignments(r)
	case *kmsg.DeleteGroupsRequest:
		return b.handleDeleteGroups(r)
	case *kmsg.DescribeClusterRequest:
		return b.handleDescribeCluster(r)
	}
	// parseRequest admits only keys in supportedAPIs, each handled above.
	panic("broker: no handler for " + kmsg.NameForKey(req.Key()))
}
