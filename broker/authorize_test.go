package broker

import (
	"context"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

var aclTestUsers = map[string]string{"admin": "s3cret-admin", "alice": "s3cret-a", "bob": "s3cret-b"}

func startACLBroker(t *testing.T, dir string) *Broker {
	t.Helper()
	return startBroker(t, func(c *Config) {
		c.SASLUsers, c.ACLs, c.SuperUsers = aclTestUsers, true, []string{"admin"}
		if dir != "" {
			c.DataDir = dir
		}
	})
}

// aclClient is a franz-go client authenticated as user.
func aclClient(t *testing.T, b *Broker, user string, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	auth := scram.Auth{User: user, Pass: aclTestUsers[user]}
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(b.Addr()), kgo.SASL(auth.AsSha256Mechanism()),
		kgo.RetryTimeout(2 * time.Second), kgo.RequestRetries(1)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// codeOf is the Kafka error code of err (0 for nil, -1 for another error).
func codeOf(err error) int16 {
	if err == nil {
		return 0
	}
	var ke *kerr.Error
	if errors.As(err, &ke) {
		return ke.Code
	}
	return -1
}

func TestACLs(t *testing.T) {
	dir := t.TempDir()
	b := startACLBroker(t, dir)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	admin := kadm.NewClient(aclClient(t, b, "admin"))
	for _, name := range []string{"orders", "orders-secret", "payments"} {
		if _, err := admin.CreateTopic(ctx, 1, 1, nil, name); err != nil {
			t.Fatalf("super user creates %s: %v", name, err)
		}
	}
	// alice: write orders; read every topic starting "ord" but
	// orders-secret (deny wins); read group g1.
	for _, bl := range []*kadm.ACLBuilder{
		kadm.NewACLs().Allow("User:alice").Topics("orders").Operations(kadm.OpWrite),
		kadm.NewACLs().Allow("User:alice").Topics("ord").ResourcePatternType(kadm.ACLPatternPrefixed).Operations(kadm.OpRead),
		kadm.NewACLs().Deny("User:alice").Topics("orders-secret").Operations(kadm.OpRead),
		kadm.NewACLs().Allow("User:alice").Groups("g1").Operations(kadm.OpRead),
	} {
		res, err := admin.CreateACLs(ctx, bl)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range res {
			if r.Err != nil {
				t.Fatalf("CreateACLs %+v: %v %s", r, r.Err, r.ErrMessage)
			}
		}
	}
	adminCl := aclClient(t, b, "admin")
	if n, code := describeAll(ctx, t, adminCl); n != 4 || code != 0 {
		t.Fatalf("DescribeAcls lists %d bindings (code %d), want 4", n, code)
	}
	// kadm's filter of the allowed ones.
	described, err := kadm.NewClient(adminCl).DescribeACLs(ctx, kadm.NewACLs().AnyResource().Allow().AllowHosts().Operations(kadm.OpAny).ResourcePatternType(kadm.ACLPatternAny))
	if err != nil || len(described) != 1 || len(described[0].Described) != 3 {
		t.Fatalf("kadm DescribeACLs of the allowed: %+v %v, want 3", described, err)
	}

	alice := aliceProduces(ctx, t, b)

	// alice reads orders in group g1 and commits.
	cons := aclClient(t, b, "alice", kgo.ConsumeTopics("orders"), kgo.ConsumerGroup("g1"), kgo.DisableAutoCommit())
	got := false
	for !got {
		fs := cons.PollFetches(ctx)
		if err := fs.Err0(); err != nil {
			t.Fatalf("alice consumes orders in g1: %v", err)
		}
		got = len(fs.Records()) > 0
	}
	if err := cons.CommitUncommittedOffsets(ctx); err != nil {
		t.Fatalf("alice commits in g1: %v", err)
	}

	aliceAdm := kadm.NewClient(alice)
	// Denied: the codes Kafka gives.
	t.Run("denials", func(t *testing.T) {
		// Deny wins over the prefixed allow.
		if code := fetchCode(ctx, t, alice, "orders-secret"); code != kerr.TopicAuthorizationFailed.Code {
			t.Fatalf("alice fetches orders-secret: code %d, want TOPIC_AUTHORIZATION_FAILED", code)
		}
		if code := fetchCode(ctx, t, alice, "payments"); code != kerr.TopicAuthorizationFailed.Code {
			t.Fatalf("alice fetches payments: code %d, want TOPIC_AUTHORIZATION_FAILED", code)
		}
		// Another group.
		offs, err := aliceAdm.FetchOffsets(ctx, "g2")
		if code := codeOf(errors.Join(err, offs.Error())); code != kerr.GroupAuthorizationFailed.Code {
			t.Fatalf("alice fetches g2's offsets: %v, want GROUP_AUTHORIZATION_FAILED", errors.Join(err, offs.Error()))
		}
		// Cluster operations.
		if _, code := describeAll(ctx, t, alice); code != kerr.ClusterAuthorizationFailed.Code {
			t.Fatalf("alice describes ACLs: code %d, want CLUSTER_AUTHORIZATION_FAILED", code)
		}
		res, err := aliceAdm.CreateACLs(ctx, kadm.NewACLs().Allow("User:alice").Topics("payments").Operations(kadm.OpAll))
		if err != nil || len(res) != 1 || codeOf(res[0].Err) != kerr.ClusterAuthorizationFailed.Code {
			t.Fatalf("alice grants herself payments: %+v %v, want CLUSTER_AUTHORIZATION_FAILED", res, err)
		}
		ct, err := aliceAdm.CreateTopic(ctx, 1, 1, nil, "alices-own")
		if codeOf(errors.Join(err, ct.Err)) != kerr.TopicAuthorizationFailed.Code {
			t.Fatalf("alice creates a topic: %v %v, want TOPIC_AUTHORIZATION_FAILED", err, ct.Err)
		}
		if _, err := aliceAdm.DescribeBrokerLogDirs(ctx, 1, nil); codeOf(err) != kerr.ClusterAuthorizationFailed.Code {
			t.Fatalf("alice describes log dirs: %v, want CLUSTER_AUTHORIZATION_FAILED", err)
		}
		// A listing shows only what she may describe.
		md, err := aliceAdm.Metadata(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if names := md.Topics.Names(); strings.Join(names, ",") != "orders,orders-secret" {
			t.Fatalf("alice's metadata lists %v, want orders and orders-secret (DESCRIBE is implied by her READ and WRITE)", names)
		}
		// bob may do nothing: produce is refused per partition, and his
		// idempotent producer cannot get an id.
		bob := aclClient(t, b, "bob", kgo.DisableIdempotentWrite())
		err = bob.ProduceSync(ctx, &kgo.Record{Topic: "orders", Value: []byte("b")}).FirstErr()
		if codeOf(err) != kerr.TopicAuthorizationFailed.Code {
			t.Fatalf("bob produces: %v, want TOPIC_AUTHORIZATION_FAILED", err)
		}
		resp, err := kmsg.NewPtrInitProducerIDRequest().RequestWith(ctx, bob)
		if err != nil || resp.ErrorCode != kerr.ClusterAuthorizationFailed.Code {
			t.Fatalf("bob's InitProducerId: %+v %v, want CLUSTER_AUTHORIZATION_FAILED", resp, err)
		}
		md, err = kadm.NewClient(bob).Metadata(ctx)
		if err != nil || len(md.Topics) != 0 {
			t.Fatalf("bob's metadata: %v topics %v, want none", err, md.Topics.Names())
		}
	})

	// Deleting alice's write takes it away; the bindings survive a
	// restart.
	del, err := admin.DeleteACLs(ctx, kadm.NewACLs().Allow("User:alice").Topics("orders").Operations(kadm.OpWrite).AllowHosts("*"))
	if err != nil || len(del) != 1 || del[0].Err != nil || len(del[0].Deleted) != 1 {
		t.Fatalf("DeleteACLs: %+v %v, want one deleted", del, err)
	}
	err = aclClient(t, b, "alice", kgo.DisableIdempotentWrite()).ProduceSync(ctx, &kgo.Record{Topic: "orders", Value: []byte("x")}).FirstErr()
	if codeOf(err) != kerr.TopicAuthorizationFailed.Code {
		t.Fatalf("alice produces after her write was deleted: %v, want TOPIC_AUTHORIZATION_FAILED", err)
	}
	b.Close()
	b = startACLBroker(t, dir)
	if n, _ := describeAll(ctx, t, aclClient(t, b, "admin")); n != 3 {
		t.Fatalf("after a restart: %d bindings, want 3", n)
	}
	if code := fetchCode(ctx, t, aclClient(t, b, "alice"), "orders-secret"); code != kerr.TopicAuthorizationFailed.Code {
		t.Fatalf("after a restart alice fetches orders-secret: code %d", code)
	}
}

// aliceProduces has alice produce to orders with franz-go's idempotent
// producer (InitProducerId: WRITE on some topic suffices, KIP-679).
func aliceProduces(ctx context.Context, t *testing.T, b *Broker) *kgo.Client {
	t.Helper()
	alice := aclClient(t, b, "alice")
	if err := alice.ProduceSync(ctx, &kgo.Record{Topic: "orders", Value: []byte("o1")}).FirstErr(); err != nil {
		t.Fatalf("alice produces to orders: %v", err)
	}
	return alice
}

// fetchCode is the error code of a fetch of topic's partition 0.
func fetchCode(ctx context.Context, t *testing.T, cl kmsg.Requestor, topic string) int16 {
	t.Helper()
	req := kmsg.NewPtrFetchRequest()
	req.MaxWaitMillis, req.MaxBytes = 10, 1<<20
	rt := kmsg.NewFetchRequestTopic()
	rt.Topic = topic
	rp := kmsg.NewFetchRequestTopicPartition()
	rp.PartitionMaxBytes = 1 << 20
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		t.Fatal(err)
	}
	if resp.ErrorCode != 0 {
		return resp.ErrorCode
	}
	return resp.Topics[0].Partitions[0].ErrorCode
}

// Without ACLs the ACL APIs say so; with them and no SASL, a client is
// User:ANONYMOUS and may do what ANONYMOUS is granted.
func TestACLsOffAndAnonymous(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	off := startBroker(t)
	res, err := newAdmin(t, off.Addr()).CreateACLs(ctx, kadm.NewACLs().Allow("User:x").Topics("t").Operations(kadm.OpRead))
	if err != nil || len(res) != 1 || codeOf(res[0].Err) != kerr.SecurityDisabled.Code {
		t.Fatalf("CreateACLs without ACLs: %+v %v, want SECURITY_DISABLED", res, err)
	}
	on := startBroker(t, func(c *Config) { c.ACLs = true })
	cl := newKgo(t, on.Addr(), kgo.DisableIdempotentWrite(), kgo.RetryTimeout(2*time.Second), kgo.RequestRetries(1))
	err = cl.ProduceSync(ctx, &kgo.Record{Topic: "anon", Value: []byte("a")}).FirstErr()
	if codeOf(err) != kerr.TopicAuthorizationFailed.Code {
		t.Fatalf("anonymous produce with ACLs on: %v, want TOPIC_AUTHORIZATION_FAILED", err)
	}
	// An in-process client (the runtime's own components) is trusted.
	if _, err := on.Produce(ctx, "anon", 0, encodeBatch(batchSpec{producerID: -1, values: []string{"a"}})); err != nil {
		t.Fatalf("in-process produce with ACLs on: %v", err)
	}
}

// kcat (librdkafka) sees the denial as Kafka's.
func TestKcatACLDenied(t *testing.T) {
	kcat := kcatPath(t)
	b := startACLBroker(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin := kadm.NewClient(aclClient(t, b, "admin"))
	if _, err := admin.CreateTopic(ctx, 1, 1, nil, "kt"); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.CreateACLs(ctx, kadm.NewACLs().Allow("User:alice").Topics("kt").Operations(kadm.OpWrite, kadm.OpRead)); err != nil {
		t.Fatal(err)
	}
	auth := func(user string) []string {
		return []string{"-b", b.Addr(), "-X", "security.protocol=SASL_PLAINTEXT", "-X", "sasl.mechanisms=PLAIN",
			"-X", "sasl.username=" + user, "-X", "sasl.password=" + aclTestUsers[user]}
	}
	runKcat(t, kcat, "k:v\n", append(auth("alice"), "-P", "-t", "kt", "-K:")...)
	if got := runKcat(t, kcat, "", append(auth("alice"), "-C", "-t", "kt", "-o", "beginning", "-e", "-q", "-K:")...); got != "k:v\n" {
		t.Fatalf("alice reads %q", got)
	}
	cmd := exec.CommandContext(ctx, kcat, append(auth("bob"), "-P", "-t", "kt", "-K:")...)
	cmd.Stdin = strings.NewReader("k:v\n")
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(strings.ToLower(string(out)), "authorization failed") {
		t.Fatalf("kcat as bob: err %v, output:\n%s", err, out)
	}
}

// describeAll lists every binding by a DescribeAcls of ANY of
// everything, as kafka-acls --list sends it.
func describeAll(ctx context.Context, t *testing.T, cl *kgo.Client) (int, int16) {
	t.Helper()
	req := kmsg.NewPtrDescribeACLsRequest()
	req.ResourceType, req.ResourcePatternType = kmsg.ACLResourceTypeAny, kmsg.ACLResourcePatternTypeAny
	req.Operation, req.PermissionType = kmsg.ACLOperationAny, kmsg.ACLPermissionTypeAny
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, r := range resp.Resources {
		n += len(r.ACLs)
	}
	return n, resp.ErrorCode
}

// Every API a client without bindings calls is refused with Kafka's code
// for what it touched: topic 29, group 30, cluster 31.
func TestACLDenialCodes(t *testing.T) {
	b := startACLBroker(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := kadm.NewClient(aclClient(t, b, "admin")).CreateTopic(ctx, 1, 1, nil, "t"); err != nil {
		t.Fatal(err)
	}
	bob := aclClient(t, b, "bob")
	const topicCode, groupCode, clusterCode = 29, 30, 31
	str := func(s string) *string { return &s }
	cases := []struct {
		name string
		req  kmsg.Request
		code func(kmsg.Response) int16
		want int16
	}{
		{"ListOffsets", func() kmsg.Request {
			r := kmsg.NewPtrListOffsetsRequest()
			rt := kmsg.NewListOffsetsRequestTopic()
			rt.Topic, rt.Partitions = "t", []kmsg.ListOffsetsRequestTopicPartition{kmsg.NewListOffsetsRequestTopicPartition()}
			r.Topics = append(r.Topics, rt)
			return r
		}(), func(r kmsg.Response) int16 { return r.(*kmsg.ListOffsetsResponse).Topics[0].Partitions[0].ErrorCode }, topicCode},
		{"OffsetCommit", func() kmsg.Request {
			r := kmsg.NewPtrOffsetCommitRequest()
			r.Group, r.Generation = "g", -1
			rt := kmsg.NewOffsetCommitRequestTopic()
			rt.Topic, rt.Partitions = "t", []kmsg.OffsetCommitRequestTopicPartition{kmsg.NewOffsetCommitRequestTopicPartition()}
			r.Topics = append(r.Topics, rt)
			return r
		}(), func(r kmsg.Response) int16 { return r.(*kmsg.OffsetCommitResponse).Topics[0].Partitions[0].ErrorCode }, groupCode},
		{"FindCoordinator", &kmsg.FindCoordinatorRequest{Version: 3, CoordinatorKey: "g"},
			func(r kmsg.Response) int16 { return r.(*kmsg.FindCoordinatorResponse).ErrorCode }, groupCode},
		{"JoinGroup", &kmsg.JoinGroupRequest{Group: "g", SessionTimeoutMillis: 10000, RebalanceTimeoutMillis: 10000, ProtocolType: "consumer",
			Protocols: []kmsg.JoinGroupRequestProtocol{{Name: "range"}}},
			func(r kmsg.Response) int16 { return r.(*kmsg.JoinGroupResponse).ErrorCode }, groupCode},
		{"SyncGroup", &kmsg.SyncGroupRequest{Group: "g", MemberID: "m"},
			func(r kmsg.Response) int16 { return r.(*kmsg.SyncGroupResponse).ErrorCode }, groupCode},
		{"Heartbeat", &kmsg.HeartbeatRequest{Group: "g", MemberID: "m"},
			func(r kmsg.Response) int16 { return r.(*kmsg.HeartbeatResponse).ErrorCode }, groupCode},
		{"LeaveGroup", &kmsg.LeaveGroupRequest{Version: 2, Group: "g", MemberID: "m"},
			func(r kmsg.Response) int16 { return r.(*kmsg.LeaveGroupResponse).ErrorCode }, groupCode},
		{"DescribeGroups", &kmsg.DescribeGroupsRequest{Groups: []string{"g"}},
			func(r kmsg.Response) int16 { return r.(*kmsg.DescribeGroupsResponse).Groups[0].ErrorCode }, groupCode},
		{"DeleteGroups", &kmsg.DeleteGroupsRequest{Groups: []string{"g"}},
			func(r kmsg.Response) int16 { return r.(*kmsg.DeleteGroupsResponse).Groups[0].ErrorCode }, groupCode},
		{"OffsetDelete", &kmsg.OffsetDeleteRequest{Group: "g"},
			func(r kmsg.Response) int16 { return r.(*kmsg.OffsetDeleteResponse).ErrorCode }, groupCode},
		{"DeleteTopics", &kmsg.DeleteTopicsRequest{Version: 4, TopicNames: []string{"t"}, TimeoutMillis: 1000},
			func(r kmsg.Response) int16 { return r.(*kmsg.DeleteTopicsResponse).Topics[0].ErrorCode }, topicCode},
		{"CreatePartitions", &kmsg.CreatePartitionsRequest{Topics: []kmsg.CreatePartitionsRequestTopic{{Topic: "t", Count: 2}}},
			func(r kmsg.Response) int16 { return r.(*kmsg.CreatePartitionsResponse).Topics[0].ErrorCode }, topicCode},
		{"DescribeConfigs topic", &kmsg.DescribeConfigsRequest{Resources: []kmsg.DescribeConfigsRequestResource{{ResourceType: kmsg.ConfigResourceTypeTopic, ResourceName: "t"}}},
			func(r kmsg.Response) int16 { return r.(*kmsg.DescribeConfigsResponse).Resources[0].ErrorCode }, topicCode},
		{"DescribeConfigs broker", &kmsg.DescribeConfigsRequest{Resources: []kmsg.DescribeConfigsRequestResource{{ResourceType: kmsg.ConfigResourceTypeBroker, ResourceName: "1"}}},
			func(r kmsg.Response) int16 { return r.(*kmsg.DescribeConfigsResponse).Resources[0].ErrorCode }, clusterCode},
		{"AlterConfigs", &kmsg.AlterConfigsRequest{Resources: []kmsg.AlterConfigsRequestResource{{ResourceType: kmsg.ConfigResourceTypeTopic, ResourceName: "t"}}},
			func(r kmsg.Response) int16 { return r.(*kmsg.AlterConfigsResponse).Resources[0].ErrorCode }, topicCode},
		{"IncrementalAlterConfigs", &kmsg.IncrementalAlterConfigsRequest{Resources: []kmsg.IncrementalAlterConfigsRequestResource{{ResourceType: kmsg.ConfigResourceTypeTopic, ResourceName: "t",
			Configs: []kmsg.IncrementalAlterConfigsRequestResourceConfig{{Name: "retention.ms", Value: str("1000")}}}}},
			func(r kmsg.Response) int16 { return r.(*kmsg.IncrementalAlterConfigsResponse).Resources[0].ErrorCode }, topicCode},
		{"DeleteRecords", &kmsg.DeleteRecordsRequest{Topics: []kmsg.DeleteRecordsRequestTopic{{Topic: "t", Partitions: []kmsg.DeleteRecordsRequestTopicPartition{{Offset: 0}}}}},
			func(r kmsg.Response) int16 { return r.(*kmsg.DeleteRecordsResponse).Topics[0].Partitions[0].ErrorCode }, topicCode},
		{"ElectLeaders", &kmsg.ElectLeadersRequest{Version: 1, Topics: []kmsg.ElectLeadersRequestTopic{{Topic: "t", Partitions: []int32{0}}}},
			func(r kmsg.Response) int16 { return r.(*kmsg.ElectLeadersResponse).ErrorCode }, clusterCode},
		{"AlterPartitionAssignments", &kmsg.AlterPartitionAssignmentsRequest{},
			func(r kmsg.Response) int16 { return r.(*kmsg.AlterPartitionAssignmentsResponse).ErrorCode }, clusterCode},
		{"ListPartitionReassignments", &kmsg.ListPartitionReassignmentsRequest{},
			func(r kmsg.Response) int16 { return r.(*kmsg.ListPartitionReassignmentsResponse).ErrorCode }, clusterCode},
		{"DescribeCluster", &kmsg.DescribeClusterRequest{EndpointType: 1},
			func(r kmsg.Response) int16 { return r.(*kmsg.DescribeClusterResponse).ErrorCode }, clusterCode},
		{"DeleteAcls", &kmsg.DeleteACLsRequest{Version: 1, Filters: []kmsg.DeleteACLsRequestFilter{{ResourceType: 1, ResourcePatternType: 1, Operation: 1, PermissionType: 1}}},
			func(r kmsg.Response) int16 { return r.(*kmsg.DeleteACLsResponse).Results[0].ErrorCode }, clusterCode},
	}
	for _, c := range cases {
		resp, err := bob.Broker(1).Request(ctx, c.req) // straight to it: no client-side routing
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if got := c.code(resp); got != c.want {
			t.Errorf("%s: code %d (%v), want %d", c.name, got, kerr.ErrorForCode(got), c.want)
		}
	}
	// ListGroups lists nothing bob may not describe.
	resp, err := bob.Request(ctx, kmsg.NewPtrListGroupsRequest())
	if err != nil || len(resp.(*kmsg.ListGroupsResponse).Groups) != 0 {
		t.Fatalf("bob's ListGroups: %+v %v", resp, err)
	}
}
