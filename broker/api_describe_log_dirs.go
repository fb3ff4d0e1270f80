// DescribeLogDirs (key 35), v0–v4 (flexible from v2).
//
// One log dir: the broker's topics directory, with the size of each
// partition asked for (all of them when Topics is null) and, from v4, the
// file system's total and usable bytes. Partitions never lag here
// (OffsetLag 0) and none is moving (IsFuture false). Topics or partitions
// that do not exist are left out, as Kafka does.
package broker

import (
	"mecha/broker/acl"
	"syscall"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func (b *Broker) handleDescribeLogDirs(c caller, req *kmsg.DescribeLogDirsRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.DescribeLogDirsResponse)
	if !b.clusterAllowed(c, acl.OpDescribe) {
		// (Before v3 there is no code: the answer is empty.)
		resp.ErrorCode = kerr.ClusterAuthorizationFailed.Code
		return resp
	}
	dir := kmsg.NewDescribeLogDirsResponseDir()
	dir.Dir = b.topics.dir
	want := map[string][]int32{}
	if req.Topics == nil {
		for _, t := range b.topics.all() {
			want[t.name] = nil
		}
	} else {
		for _, rt := range req.Topics {
			want[rt.Topic] = append(want[rt.Topic], rt.Partitions...)
		}
	}
	for name, parts := range want {
		t := b.topics.get(name)
		if t == nil {
			continue
		}
		if req.Topics == nil {
			for p := range t.numPartitions() {
				parts = append(parts, p)
			}
		}
		dt := kmsg.NewDescribeLogDirsResponseDirTopic()
		dt.Topic = name
		for _, p := range parts {
			part := t.partition(p)
			if part == nil {
				continue
			}
			dp := kmsg.NewDescribeLogDirsResponseDirTopicPartition()
			dp.Partition, dp.Size = p, part.Size()
			dt.Partitions = append(dt.Partitions, dp)
		}
		if len(dt.Partitions) > 0 {
			dir.Topics = append(dir.Topics, dt)
		}
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(b.topics.dir, &st); err == nil {
		dir.TotalBytes = int64(st.Blocks) * st.Bsize
		dir.UsableBytes = int64(st.Bavail) * st.Bsize
	} else {
		dir.TotalBytes, dir.UsableBytes = -1, -1
	}
	resp.Dirs = []kmsg.DescribeLogDirsResponseDir{dir}
	return resp
}
