package broker

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"mecha/internal/poll"
)

func kadmCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	t.Cleanup(cancel)
	return ctx
}

func strp(s string) *string { return &s }

func TestKadmTopicsAndConfigs(t *testing.T) {
	b := startBroker(t, func(c *Config) { c.AutoCreateTopics = false })
	adm := newAdmin(t, b.Addr())
	ctx := kadmCtx(t)

	configs := map[string]*string{"retention.ms": strp("3600000"), "segment.bytes": strp("1048576"), "cleanup.policy": strp("delete")}
	resp, err := adm.CreateTopic(ctx, 3, 1, configs, "configured")
	if err != nil || resp.Err != nil {
		t.Fatalf("create with configs: %v / %v %s", err, resp.Err, resp.ErrMessage)
	}
	if resp.NumPartitions != 3 || resp.ReplicationFactor != 1 {
		t.Errorf("create answered %d partitions, replication %d; want 3 and 1", resp.NumPartitions, resp.ReplicationFactor)
	}
	if c := resp.Configs["retention.ms"]; c.MaybeValue() != "3600000" {
		t.Errorf("create answered retention.ms %q, want 3600000", c.MaybeValue())
	}

	// Bad configs fail the topic with INVALID_CONFIG, naming the config.
	for _, tc := range []struct {
		configs map[string]*string
		name    string
	}{
		{map[string]*string{"cleanup.policy": strp("compact")}, "cleanup.policy"},
		{map[string]*string{"retention.ms": strp("a week")}, "retention.ms"},
		{map[string]*string{"segment.bytes": strp("1")}, "segment.bytes"},
		{map[string]*string{"no.such.config": strp("1")}, "no.such.config"},
	} {
		name := "bad-" + strings.ReplaceAll(tc.name, ".", "-")
		resps, err := adm.CreateTopics(ctx, 1, 1, tc.configs, name)
		if err != nil {
			t.Fatal(err)
		}
		resp, _ := resps.On(name, nil)
		if !errors.Is(resp.Err, kerr.InvalidConfig) || !strings.Contains(resp.ErrMessage, tc.name) {
			t.Errorf("create with bad %s: %v %q; want INVALID_CONFIG naming %s", tc.name, resp.Err, resp.ErrMessage, tc.name)
		}
	}
	topics, err := adm.ListTopics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if names := topics.Names(); !slices.Equal(names, []string{"configured"}) {
		t.Errorf("topics %v: a topic with a bad config was created", names)
	}
	if resp, _ := adm.CreateTopic(ctx, 1, 1, nil, "configured"); !errors.Is(resp.Err, kerr.TopicAlreadyExists) {
		t.Errorf("create of an existing topic: %v, want TOPIC_ALREADY_EXISTS", resp.Err)
	}

	rcs, err := adm.DescribeTopicConfigs(ctx, "configured")
	if err != nil {
		t.Fatal(err)
	}
	rc, err := rcs.On("configured", nil)
	if err != nil || rc.Err != nil {
		t.Fatalf("describe configs: %v / %v", err, rc.Err)
	}
	got := map[string]kadm.Config{}
	for _, c := range rc.Configs {
		got[c.Key] = c
	}
	for name, want := range map[string]string{"retention.ms": "3600000", "segment.bytes": "1048576", "cleanup.policy": "delete"} {
		if c := got[name]; c.MaybeValue() != want || c.Source != kmsg.ConfigSourceDynamicTopicConfig {
			t.Errorf("%s = %q from %v, want %q set on the topic", name, c.MaybeValue(), c.Source, want)
		}
	}
	if c := got["max.message.bytes"]; c.MaybeValue() != "1048588" || c.Source != kmsg.ConfigSourceDefaultConfig {
		t.Errorf("max.message.bytes = %q from %v, want the default 1048588", c.MaybeValue(), c.Source)
	}

	// CreatePartitions grows the topic; the new partitions take writes.
	cps, err := adm.CreatePartitions(ctx, 2, "configured")
	if err != nil {
		t.Fatal(err)
	}
	if cp, _ := cps.On("configured", nil); cp.Err != nil {
		t.Fatalf("create partitions: %v", cp.Err)
	}
	td, err := adm.ListTopics(ctx, "configured")
	if err != nil {
		t.Fatal(err)
	}
	if n := len(td["configured"].Partitions); n != 5 {
		t.Fatalf("%d partitions after adding 2 to 3, want 5", n)
	}
	prod := newKgo(t, b.Addr(), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err := prod.ProduceSync(ctx, &kgo.Record{Topic: "configured", Partition: 4, Value: []byte("new partition")}).FirstErr(); err != nil {
		t.Fatalf("produce to a new partition: %v", err)
	}
	cps, err = adm.UpdatePartitions(ctx, 2, "configured")
	if err != nil {
		t.Fatal(err)
	}
	if cp, _ := cps.On("configured", nil); !errors.Is(cp.Err, kerr.InvalidPartitions) {
		t.Errorf("shrinking to 2 partitions: %v, want INVALID_PARTITIONS", cp.Err)
	}

	// DeleteTopics: gone from metadata, and a second delete finds nothing.
	dts, err := adm.DeleteTopics(ctx, "configured")
	if err != nil {
		t.Fatal(err)
	}
	if dt, _ := dts.On("configured", nil); dt.Err != nil {
		t.Fatalf("delete topic: %v", dt.Err)
	}
	td, err = adm.ListTopics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(td.Names()) != 0 {
		t.Errorf("topics after delete: %v", td.Names())
	}
	dts, err = adm.DeleteTopics(ctx, "configured")
	if err == nil {
		dt, _ := dts.On("configured", nil)
		err = dt.Err
	}
	if !errors.Is(err, kerr.UnknownTopicOrPartition) {
		t.Errorf("deleting a deleted topic: %v, want UNKNOWN_TOPIC_OR_PARTITION", err)
	}
	// A topic of the same name starts empty.
	createTopic(t, adm, "configured", 1, nil)
	if end := endOffsets(t, adm, "configured")[0]; end != 0 {
		t.Errorf("re-created topic ends at %d, want 0", end)
	}
}

func TestKadmOffsetsAndDeleteRecords(t *testing.T) {
	b := startBroker(t)
	adm := newAdmin(t, b.Addr())
	ctx := kadmCtx(t)
	const topic = "timed"
	createTopic(t, adm, topic, 1, nil)
	// Three batches, one second apart in record time.
	t0 := time.Now().Add(-time.Hour).Truncate(time.Millisecond)
	prod := newKgo(t, b.Addr(), kgo.DefaultProduceTopic(topic))
	for i := 0; i < 3; i++ {
		var recs []*kgo.Record
		for j := 0; j < 2; j++ {
			recs = append(recs, &kgo.Record{Value: []byte(strconv.Itoa(2*i + j)), Timestamp: t0.Add(time.Duration(i) * time.Second)})
		}
		if err := prod.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	listed := func(lo kadm.ListedOffsets, err error) kadm.ListedOffset {
		t.Helper()
		if err == nil {
			err = lo.Error()
		}
		if err != nil {
			t.Fatal(err)
		}
		o, ok := lo.Lookup(topic, 0)
		if !ok {
			t.Fatalf("no offset listed for %s/0", topic)
		}
		return o
	}
	if o := listed(adm.ListStartOffsets(ctx, topic)); o.Offset != 0 {
		t.Errorf("start offset %d, want 0", o.Offset)
	}
	if o := listed(adm.ListEndOffsets(ctx, topic)); o.Offset != 6 {
		t.Errorf("end offset %d, want 6", o.Offset)
	}
	for _, tc := range []struct {
		after time.Duration
		want  int64
	}{
		{-time.Minute, 0},
		{0, 0},
		{500 * time.Millisecond, 2},
		{time.Second, 2},
		{2 * time.Second, 4},
		{time.Minute, 6}, // nothing that late: the end
	} {
		o := listed(adm.ListOffsetsAfterMilli(ctx, t0.Add(tc.after).UnixMilli(), topic))
		if o.Offset != tc.want {
			t.Errorf("first offset at or after t0%+v: %d, want %d", tc.after, o.Offset, tc.want)
		}
	}

	// DeleteRecords moves the start; consuming from the start begins there.
	os := kadm.Offsets{}
	os.AddOffset(topic, 0, 3, -1)
	drs, err := adm.DeleteRecords(ctx, os)
	if err != nil {
		t.Fatal(err)
	}
	dr, _ := drs.Lookup(topic, 0)
	if dr.Err != nil || dr.LowWatermark != 3 {
		t.Fatalf("delete records before 3: low watermark %d, %v", dr.LowWatermark, dr.Err)
	}
	if o := listed(adm.ListStartOffsets(ctx, topic)); o.Offset != 3 {
		t.Errorf("start offset after delete records %d, want 3", o.Offset)
	}
	cons := newKgo(t, b.Addr(), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	var got []string
	var offsets []int64
	for len(got) < 3 {
		fs := cons.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("consumed %v before the deadline", got)
		}
		fs.EachError(func(_ string, _ int32, err error) { t.Fatalf("fetch: %v", err) })
		fs.EachRecord(func(r *kgo.Record) {
			got = append(got, string(r.Value))
			offsets = append(offsets, r.Offset)
		})
	}
	if !slices.Equal(got, []string{"3", "4", "5"}) || offsets[0] != 3 {
		t.Errorf("consumed %v at %v, want [3 4 5] from offset 3", got, offsets)
	}
	os = kadm.Offsets{}
	os.AddOffset(topic, 0, 99, -1)
	drs, err = adm.DeleteRecords(ctx, os)
	if err == nil {
		dr, _ = drs.Lookup(topic, 0)
		err = dr.Err
	}
	if !errors.Is(err, kerr.OffsetOutOfRange) {
		t.Errorf("delete records past the end: %v, want OFFSET_OUT_OF_RANGE", err)
	}
}

func TestKadmGroupsAndLag(t *testing.T) {
	b := startBroker(t)
	adm := newAdmin(t, b.Addr())
	ctx := kadmCtx(t)
	const topic, group = "lagged", "lag-group"
	createTopic(t, adm, topic, 2, nil)
	prod := newKgo(t, b.Addr(), kgo.DefaultProduceTopic(topic))
	produce := func(n int) {
		t.Helper()
		var recs []*kgo.Record
		for i := 0; i < n; i++ {
			recs = append(recs, &kgo.Record{Key: []byte(strconv.Itoa(i)), Value: []byte("v")})
		}
		if err := prod.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	produce(20)

	cons := newKgo(t, b.Addr(), kgo.ClientID("lag-client"), kgo.ConsumerGroup(group), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.DisableAutoCommit())
	for n := 0; n < 20; {
		fs := cons.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("consumed %d of 20", n)
		}
		n += fs.NumRecords()
	}
	if err := cons.CommitUncommittedOffsets(ctx); err != nil {
		t.Fatal(err)
	}

	lgs, err := adm.ListGroups(ctx)
	if err != nil {
		t.Fatal(err)
	}
	lg, ok := lgs[group]
	if !ok || lg.State != "Stable" || lg.ProtocolType != "consumer" {
		t.Fatalf("listed groups %+v, want %s Stable with protocol type consumer", lgs, group)
	}
	if lgs, err := adm.ListGroups(ctx, "Empty"); err != nil || len(lgs) != 0 {
		t.Errorf("groups in state Empty: %v, %v; want none", lgs.Groups(), err)
	}
	dgs, err := adm.DescribeGroups(ctx, group)
	if err != nil {
		t.Fatal(err)
	}
	dg := dgs[group]
	if dg.State != "Stable" || dg.Protocol == "" || len(dg.Members) != 1 {
		t.Fatalf("described %+v, want Stable with a protocol and one member", dg)
	}
	m := dg.Members[0]
	assigned, ok := m.Assigned.AsConsumer()
	if m.ClientID != "lag-client" || !ok || len(assigned.Topics) != 1 || len(assigned.Topics[0].Partitions) != 2 {
		t.Errorf("member %+v: want client lag-client assigned both partitions", m)
	}

	lag := func() int64 {
		t.Helper()
		l, err := adm.Lag(ctx, group)
		if err != nil {
			t.Fatal(err)
		}
		gl := l[group]
		if err := gl.Error(); err != nil {
			t.Fatal(err)
		}
		return gl.Lag.Total()
	}
	if n := lag(); n != 0 {
		t.Errorf("lag after committing everything: %d, want 0", n)
	}
	produce(7)
	if n := lag(); n != 7 {
		t.Errorf("lag after 7 more records: %d, want 7", n)
	}

	// Once the member leaves, the group is Empty with its offsets kept.
	cons.Close()
	poll.Until(t, waitLong, "the group to be Empty", func() bool {
		dgs, err := adm.DescribeGroups(ctx, group)
		return err == nil && dgs[group].State == "Empty"
	})
	if n := lag(); n != 7 {
		t.Errorf("lag of the empty group: %d, want 7", n)
	}
}

// DeleteGroups removes an empty group and its committed offsets, and
// refuses a group with members (NON_EMPTY_GROUP) and an unknown one
// (GROUP_ID_NOT_FOUND), as kadm expects; DescribeCluster lists this
// broker as the cluster and its controller.
func TestKadmDeleteGroupsDescribeCluster(t *testing.T) {
	b := startBroker(t)
	adm := newAdmin(t, b.Addr())
	ctx := kadmCtx(t)
	if _, err := adm.CreateTopic(ctx, 1, 1, nil, "dg"); err != nil {
		t.Fatal(err)
	}
	// "idle" commits offsets and leaves; "busy" stays a member.
	idle := kadm.Offsets{}
	idle.Add(kadm.Offset{Topic: "dg", Partition: 0, At: 1, LeaderEpoch: -1})
	if _, err := adm.CommitOffsets(ctx, "idle", idle); err != nil {
		t.Fatal(err)
	}
	busy, err := kgo.NewClient(kgo.SeedBrokers(b.Addr()), kgo.ConsumerGroup("busy"), kgo.ConsumeTopics("dg"))
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	poll.Until(t, waitLong, "the busy group to be stable", func() bool {
		ds, err := adm.DescribeGroups(ctx, "busy")
		return err == nil && ds["busy"].State == "Stable"
	})
	resp, err := adm.DeleteGroups(ctx, "idle", "busy", "nobody")
	if err != nil {
		t.Fatal(err)
	}
	for g, want := range map[string]error{"idle": nil, "busy": kerr.NonEmptyGroup, "nobody": kerr.GroupIDNotFound} {
		if got := resp[g].Err; !errors.Is(got, want) && got != want {
			t.Errorf("delete %s: %v, want %v", g, got, want)
		}
	}
	fetched, err := adm.FetchOffsets(ctx, "idle")
	if err != nil {
		t.Fatal(err)
	}
	if o, ok := fetched.Lookup("dg", 0); ok && o.At >= 0 {
		t.Errorf("the deleted group's offset is still there: %+v", o)
	}
	listed, err := adm.ListGroups(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := listed["idle"]; ok {
		t.Errorf("the deleted group is still listed: %v", listed.Groups())
	}

	cl := newKgo(t, b.Addr())
	dc := kmsg.NewPtrDescribeClusterRequest()
	r, err := dc.RequestWith(ctx, cl)
	if err != nil {
		t.Fatal(err)
	}
	if r.ErrorCode != 0 || r.ClusterID != clusterID || r.ControllerID != b.cfg.NodeID || len(r.Brokers) != 1 || r.Brokers[0].Port != b.port {
		t.Fatalf("DescribeCluster: %+v", r)
	}
	dc.Version, dc.EndpointType = 1, 2
	if r, err = dc.RequestWith(ctx, cl); err != nil || r.ErrorCode != kerr.UnsupportedEndpointType.Code {
		t.Fatalf("DescribeCluster of controllers: %v, code %d", err, r.ErrorCode)
	}
}

// Topic configs altered the incremental way and the whole-set way are
// described, used, and kept across a restart; bad names, values and
// operations are refused naming them.
func TestKadmAlterTopicConfigs(t *testing.T) {
	dir := t.TempDir()
	start := func() *Broker {
		return startBroker(t, func(c *Config) { c.DataDir = dir; c.AutoCreateTopics = false })
	}
	b := start()
	adm := newAdmin(t, b.Addr())
	ctx := kadmCtx(t)
	if _, err := adm.CreateTopic(ctx, 2, 1, map[string]*string{"segment.bytes": strp("1048576")}, "alt"); err != nil {
		t.Fatal(err)
	}
	describe := func(adm *kadm.Client) map[string]string {
		t.Helper()
		rs, err := adm.DescribeTopicConfigs(ctx, "alt")
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]string{}
		for _, c := range rs[0].Configs {
			if c.Source == kmsg.ConfigSourceDynamicTopicConfig && c.Value != nil {
				out[c.Key] = *c.Value
			}
		}
		return out
	}
	resp, err := adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{
		{Op: kadm.SetConfig, Name: "retention.ms", Value: strp("60000")},
		{Op: kadm.DeleteConfig, Name: "segment.bytes"},
	}, "alt")
	if err != nil || resp[0].Err != nil {
		t.Fatalf("incremental alter: %v %v", err, resp)
	}
	if got := describe(adm); len(got) != 1 || got["retention.ms"] != "60000" {
		t.Fatalf("after the incremental alter: %v", got)
	}
	if tp := b.topics.get("alt"); tp.parts[1].Config().RetentionMs != 60000 {
		t.Fatalf("partition 1 still uses retention.ms %d", tp.parts[1].Config().RetentionMs)
	}
	// Refusals, each naming what was wrong; nothing changes.
	for _, tc := range []struct {
		cfg  kadm.AlterConfig
		want error
		msg  string
	}{
		{kadm.AlterConfig{Op: kadm.SetConfig, Name: "retention.ms", Value: strp("soon")}, kerr.InvalidConfig, `retention.ms="soon"`},
		{kadm.AlterConfig{Op: kadm.SetConfig, Name: "compression.type", Value: strp("zstd")}, kerr.InvalidConfig, "compression.type is not a supported topic config"},
		{kadm.AlterConfig{Op: kadm.AppendConfig, Name: "cleanup.policy", Value: strp("delete")}, kerr.InvalidRequest, "APPEND"},
	} {
		resp, err := adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{tc.cfg}, "alt")
		if err != nil {
			t.Fatal(err)
		}
		if !errors.Is(resp[0].Err, tc.want) || !strings.Contains(resp[0].ErrMessage, tc.msg) {
			t.Errorf("%+v: %v %q, want %v naming %q", tc.cfg, resp[0].Err, resp[0].ErrMessage, tc.want, tc.msg)
		}
	}
	if resp, err := adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{{Op: kadm.SetConfig, Name: "retention.ms", Value: strp("1")}}, "nope"); err != nil || !errors.Is(resp[0].Err, kerr.UnknownTopicOrPartition) {
		t.Errorf("unknown topic: %v %v", err, resp)
	}
	// The whole-set way replaces every override.
	resp, err = adm.AlterTopicConfigsState(ctx, []kadm.AlterConfig{{Name: "max.message.bytes", Value: strp("65536")}}, "alt")
	if err != nil || resp[0].Err != nil {
		t.Fatalf("alter: %v %v", err, resp)
	}
	if got := describe(adm); len(got) != 1 || got["max.message.bytes"] != "65536" {
		t.Fatalf("after the whole-set alter: %v", got)
	}
	// Kept across a restart.
	b.Close()
	b = start()
	if got := describe(newAdmin(t, b.Addr())); len(got) != 1 || got["max.message.bytes"] != "65536" {
		t.Fatalf("after a restart: %v", got)
	}
}

// DescribeLogDirs gives the one log dir with each partition's size, for
// every topic (null) or the ones asked, and the file system's bytes.
func TestKadmDescribeLogDirs(t *testing.T) {
	b := startBroker(t)
	adm := newAdmin(t, b.Addr())
	ctx := kadmCtx(t)
	createTopic(t, adm, "ld", 2, nil)
	cl := newKgo(t, b.Addr(), kgo.ProducerBatchCompression(kgo.NoCompression()), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "ld", Partition: 0, Value: []byte(strings.Repeat("x", 1000))}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	all, err := adm.DescribeAllLogDirs(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	dirs := all[b.cfg.NodeID]
	if len(dirs) != 1 {
		t.Fatalf("log dirs %v, want one", dirs)
	}
	for _, d := range dirs {
		if d.Err != nil || d.TotalBytes <= 0 || d.UsableBytes <= 0 {
			t.Fatalf("dir %s: err %v, total %d, usable %d", d.Dir, d.Err, d.TotalBytes, d.UsableBytes)
		}
		p0, ok := d.Topics.Lookup("ld", 0)
		if !ok || p0.Size < 1000 {
			t.Fatalf("ld/0: %+v (found %v), want at least the record's 1000 bytes", p0, ok)
		}
		if _, ok := d.Topics.Lookup("ld", 1); !ok {
			t.Fatal("ld/1 missing")
		}
	}
	ts := kadm.TopicsSet{}
	ts.Add("ld", 1)
	ts.Add("nope", 0)
	some, err := adm.DescribeBrokerLogDirs(ctx, b.cfg.NodeID, ts)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range some {
		if _, ok := d.Topics.Lookup("ld", 0); ok {
			t.Error("ld/0 answered though only ld/1 was asked")
		}
		if _, ok := d.Topics.Lookup("ld", 1); !ok {
			t.Error("ld/1 missing")
		}
		if _, ok := d.Topics["nope"]; ok {
			t.Error("an unknown topic answered")
		}
	}
}

// OffsetDelete drops a group's offsets for topics its members do not
// subscribe to, keeps those of subscribed topics (GROUP_SUBSCRIBED_TO_TOPIC)
// and answers GROUP_ID_NOT_FOUND for an unknown group.
func TestKadmDeleteOffsets(t *testing.T) {
	b := startBroker(t)
	adm := newAdmin(t, b.Addr())
	ctx := kadmCtx(t)
	createTopic(t, adm, "sub", 1, nil)
	createTopic(t, adm, "old", 1, nil)
	commit := kadm.Offsets{}
	commit.Add(kadm.Offset{Topic: "sub", Partition: 0, At: 3, LeaderEpoch: -1})
	commit.Add(kadm.Offset{Topic: "old", Partition: 0, At: 5, LeaderEpoch: -1})
	if _, err := adm.CommitOffsets(ctx, "od", commit); err != nil {
		t.Fatal(err)
	}
	member := newKgo(t, b.Addr(), kgo.ConsumerGroup("od"), kgo.ConsumeTopics("sub"), kgo.DisableAutoCommit())
	poll.Until(t, waitLong, "the member to join", func() bool {
		pctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		member.PollRecords(pctx, 0) // drives the join
		cancel()
		ds, err := adm.DescribeGroups(ctx, "od")
		return err == nil && ds["od"].State == "Stable"
	})
	ts := kadm.TopicsSet{}
	ts.Add("sub", 0)
	ts.Add("old", 0)
	ts.Add("gone", 0)
	resp, err := adm.DeleteOffsets(ctx, "od", ts)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		topic string
		want  error
	}{{"sub", kerr.GroupSubscribedToTopic}, {"old", nil}, {"gone", kerr.UnknownTopicOrPartition}} {
		if got, _ := resp.Lookup(tc.topic, 0); !errors.Is(got, tc.want) && got != tc.want {
			t.Errorf("%s: %v, want %v", tc.topic, got, tc.want)
		}
	}
	fetched, err := adm.FetchOffsets(ctx, "od")
	if err != nil {
		t.Fatal(err)
	}
	if o, ok := fetched.Lookup("sub", 0); !ok || o.At != 3 {
		t.Errorf("sub/0 = %+v (%v), want 3 kept", o, ok)
	}
	if o, ok := fetched.Lookup("old", 0); ok && o.At >= 0 {
		t.Errorf("old/0 = %+v, want deleted", o)
	}
	if _, err := adm.DeleteOffsets(ctx, "nobody", ts); !errors.Is(err, kerr.GroupIDNotFound) {
		t.Errorf("unknown group: %v", err)
	}
}

// A manual replica assignment on the single broker creates its
// partitions; one naming another broker, a gap or a repeat is refused
// INVALID_REPLICA_ASSIGNMENT naming the partition.
func TestCreateTopicsReplicaAssignment(t *testing.T) {
	b := startBroker(t)
	cl := newKgo(t, b.Addr())
	ctx := kadmCtx(t)
	create := func(name string, assign map[int32][]int32) kmsg.CreateTopicsResponseTopic {
		req := kmsg.NewPtrCreateTopicsRequest()
		rt := kmsg.NewCreateTopicsRequestTopic()
		rt.Topic, rt.NumPartitions, rt.ReplicationFactor = name, -1, -1
		for p, rs := range assign {
			a := kmsg.NewCreateTopicsRequestTopicReplicaAssignment()
			a.Partition, a.Replicas = p, rs
			rt.ReplicaAssignment = append(rt.ReplicaAssignment, a)
		}
		req.Topics = append(req.Topics, rt)
		resp, err := req.RequestWith(ctx, cl)
		if err != nil {
			t.Fatal(err)
		}
		return resp.Topics[0]
	}
	me := b.cfg.NodeID
	if r := create("manual", map[int32][]int32{0: {me}, 1: {me}, 2: {me}}); r.ErrorCode != 0 || r.NumPartitions != 3 {
		t.Fatalf("manual assignment: code %d, partitions %d", r.ErrorCode, r.NumPartitions)
	}
	if got := b.topics.get("manual").numPartitions(); got != 3 {
		t.Fatalf("the topic has %d partitions, want 3", got)
	}
	for name, assign := range map[string]map[int32][]int32{
		"other-broker": {0: {me + 1}},
		"two-replicas": {0: {me, me + 1}},
		"gap":          {0: {me}, 2: {me}},
	} {
		r := create(name, assign)
		if r.ErrorCode != kerr.InvalidReplicaAssignment.Code || r.ErrorMessage == nil || !strings.Contains(*r.ErrorMessage, "partition") {
			t.Errorf("%s: code %d, message %v", name, r.ErrorCode, r.ErrorMessage)
		}
		if b.topics.get(name) != nil {
			t.Errorf("%s was created", name)
		}
	}
}

// The cluster's leadership and reassignment APIs, as this one broker
// answers them through kadm: no election needed, a reassignment onto
// itself completes, onto another broker is refused, and none is listed.
func TestKadmReassignmentsAndElections(t *testing.T) {
	b := startBroker(t)
	adm := newAdmin(t, b.Addr())
	ctx := kadmCtx(t)
	createTopic(t, adm, "ra", 2, nil)
	ts := kadm.TopicsSet{}
	ts.Add("ra", 0, 1)
	ts.Add("nope", 0)
	el, err := adm.ElectLeaders(ctx, kadm.ElectPreferredReplica, ts)
	if err != nil {
		t.Fatal(err)
	}
	for p := int32(0); p < 2; p++ {
		if r := el["ra"][p]; !errors.Is(r.Err, kerr.ElectionNotNeeded) {
			t.Errorf("elect ra/%d: %v, want ELECTION_NOT_NEEDED", p, r.Err)
		}
	}
	if r := el["nope"][0]; !errors.Is(r.Err, kerr.UnknownTopicOrPartition) {
		t.Errorf("elect nope/0: %v", r.Err)
	}
	all, err := adm.ElectLeaders(ctx, kadm.ElectPreferredReplica, nil)
	if err != nil || len(all["ra"]) != 2 {
		t.Fatalf("elect all: %v %v", err, all)
	}
	req := kadm.AlterPartitionAssignmentsReq{}
	req.Assign("ra", 0, []int32{b.cfg.NodeID})
	req.Assign("ra", 1, []int32{b.cfg.NodeID, b.cfg.NodeID + 1})
	alt, err := adm.AlterPartitionAssignments(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if r := alt["ra"][0]; r.Err != nil {
		t.Errorf("reassign ra/0 onto this broker: %v", r.Err)
	}
	if r := alt["ra"][1]; !errors.Is(r.Err, kerr.InvalidReplicaAssignment) || !strings.Contains(r.ErrMessage, "one broker") {
		t.Errorf("reassign ra/1 onto another broker: %v %q", r.Err, r.ErrMessage)
	}
	listed, err := adm.ListPartitionReassignments(ctx, nil)
	if err != nil || len(listed) != 0 {
		t.Fatalf("list reassignments: %v %v", err, listed)
	}
}
