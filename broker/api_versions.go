// ApiVersions (key 18), v0–v3.
//
// The broker advertises exactly the keys and versions it implements, from
// supportedAPIs. The response header is always v0, even for the flexible
// v3 request (KIP-511), so clients can parse it before they know what the
// broker speaks. An ApiVersions request at a version the broker does not
// serve gets UNSUPPORTED_VERSION (35) with the v0 body, and the client
// retries at a version from that list.
//
// Topic-ID versions (Fetch 13+, Metadata 10+, Produce 13+) are not
// advertised: topics have no ids here.
package broker

import (
	"fmt"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

type versionRange struct{ min, max int16 }

func (v versionRange) rangeString() string {
	if v.max == 0 && v.min == 0 {
		return "none"
	}
	return fmt.Sprintf("v%d-v%d", v.min, v.max)
}

// supportedAPIs is every request the broker serves, by key. Produce starts
// at v3, the first with v2 record batches: older message formats are not
// stored. Fetch starts at v4 for the same reason.
var supportedAPIs = map[int16]versionRange{
	0:  {3, 9},  // Produce
	1:  {4, 12}, // Fetch
	2:  {1, 7},  // ListOffsets
	3:  {0, 9},  // Metadata
	8:  {0, 8},  // OffsetCommit
	9:  {0, 7},  // OffsetFetch
	10: {0, 3},  // FindCoordinator
	11: {0, 7},  // JoinGroup
	12: {0, 4},  // Heartbeat
	13: {0, 4},  // LeaveGroup
	14: {0, 5},  // SyncGroup
	15: {0, 5},  // DescribeGroups
	16: {0, 4},  // ListGroups
	17: {0, 1},  // SaslHandshake (sasl.go)
	18: {0, 3},  // ApiVersions
	23: {0, 4},  // OffsetForLeaderEpoch
	29: {0, 3},  // DescribeAcls (api_acls.go)
	30: {0, 3},  // CreateAcls
	31: {0, 3},  // DeleteAcls
	33: {0, 2},  // AlterConfigs
	35: {0, 4},  // DescribeLogDirs
	36: {0, 2},  // SaslAuthenticate (sasl.go)
	42: {0, 2},  // DeleteGroups
	43: {0, 2},  // ElectLeaders (api_reassignments.go)
	44: {0, 1},  // IncrementalAlterConfigs
	45: {0, 0},  // AlterPartitionReassignments (api_reassignments.go)
	46: {0, 0},  // ListPartitionReassignments (api_reassignments.go)
	47: {0, 0},  // OffsetDelete
	60: {0, 1},  // DescribeCluster
	19: {0, 6},  // CreateTopics
	20: {0, 5},  // DeleteTopics
	21: {0, 2},  // DeleteRecords
	22: {0, 4},  // InitProducerId
	32: {0, 4},  // DescribeConfigs
	37: {0, 3},  // CreatePartitions
}

func apiVersionsList() []kmsg.ApiVersionsResponseApiKey {
	out := make([]kmsg.ApiVersionsResponseApiKey, 0, len(supportedAPIs))
	for k := int16(0); k < 100; k++ {
		v, ok := supportedAPIs[k]
		if !ok {
			continue
		}
		e := kmsg.NewApiVersionsResponseApiKey()
		e.ApiKey, e.MinVersion, e.MaxVersion = k, v.min, v.max
		out = append(out, e)
	}
	return out
}

func (b *Broker) handleApiVersions(req *kmsg.ApiVersionsRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.ApiVersionsResponse)
	resp.ApiKeys = apiVersionsList()
	return resp
}

// apiVersionsUnsupported is the KIP-511 answer to an ApiVersions request
// at an unsupported version.
func apiVersionsUnsupported() kmsg.Response {
	resp := kmsg.NewPtrApiVersionsResponse()
	resp.Version = 0
	resp.ErrorCode = kerr.UnsupportedVersion.Code
	resp.ApiKeys = apiVersionsList()
	return resp
}
