package broker

// Consumer groups in cluster mode, as Kafka keeps them: a group's
// coordinator is the leader of its partition of __consumer_offsets (a
// hash of the group id picks it), committed offsets are records of that
// partition, written with acks=all, so they are replicated like any
// topic's and survive the coordinator's death; a broker that becomes the
// partition's leader loads them from the log before it coordinates (it
// answers COORDINATOR_LOAD_IN_PROGRESS meanwhile). Group membership
// itself is not logged: after a coordinator failover the members join
// the new one, as they do in Kafka.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"hash/fnv"
	"time"

	"mecha/broker/storage"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

const (
	// offsetsTopic holds the committed offsets of the cluster's groups.
	offsetsTopic = "__consumer_offsets"
	// offsetsPartitions is its partition count (Kafka's default is 50;
	// a DC's brokers coordinate fewer groups).
	offsetsPartitions = 10
)

// groupPartition is the __consumer_offsets partition of group.
func groupPartition(group string) int32 {
	h := fnv.New32a()
	h.Write([]byte(group))
	return int32(h.Sum32() % offsetsPartitions)
}

// coordinatorOf is the member coordinating group, creating the offsets
// topic on first use; a Kafka code when there is none.
func (b *Broker) coordinatorOf(group string) (string, int16) {
	tp := b.cl.cfg.Maps.Map().Topic(offsetsTopic)
	if tp == nil {
		var code int16
		if tp, code, _ = b.clusterCreateTopic(offsetsTopic, offsetsPartitions, -1, nil, clusterSettings{}); tp == nil {
			if code == kerr.TopicAlreadyExists.Code {
				tp = b.cl.cfg.Maps.Map().Topic(offsetsTopic)
			}
			if tp == nil {
				return "", kerr.CoordinatorNotAvailable.Code
			}
		}
	}
	g := tp.Partitions[groupPartition(group)]
	if g.Leader == "" {
		return "", kerr.CoordinatorNotAvailable.Code
	}
	return g.Leader, 0
}

// coordinates says whether this broker coordinates group now: 0, or
// NOT_COORDINATOR, or COORDINATOR_LOAD_IN_PROGRESS while it loads the
// group's offsets. Without cluster mode it coordinates every group.
func (b *Broker) coordinates(group string) int16 {
	if b.cl == nil {
		return 0
	}
	pr := b.cl.part(offsetsTopic, groupPartition(group))
	if pr == nil {
		return kerr.NotCoordinator.Code
	}
	pr.mu.Lock()
	leader := pr.role == roleLeader
	pr.mu.Unlock()
	switch {
	case !leader:
		return kerr.NotCoordinator.Code
	case !pr.loaded.Load():
		return kerr.CoordinatorLoadInProgress.Code
	}
	return 0
}

// loadOffsets replays an offsets partition this broker now leads into
// its offset store, then lets it coordinate the partition's groups. It
// reads up to the log end: the new leader's log is the truth, and what
// it holds above the high watermark commits with its first write.
func (b *Broker) loadOffsets(pr *partReplica, epoch uint64) {
	defer b.wg.Done()
	start, _ := pr.p.Offsets()
	end := pr.p.EndOffset()
	entries := map[storage.OffsetKey]storage.Committed{}
	for off := start; off < end; {
		res, err := pr.p.ReadUncommitted(off, 1<<20, nil)
		if err != nil || len(res.Batches) == 0 {
			b.log.Error("broker: loading group offsets", "partition", pr.key.part, "offset", off, "err", err)
			return
		}
		next, err := decodeOffsetRecords(res.Batches, entries)
		if err != nil {
			b.log.Error("broker: loading group offsets", "partition", pr.key.part, "offset", off, "err", err)
			return
		}
		off = max(next, off+1)
	}
	if len(entries) > 0 {
		if err := b.offsets.Commit(entries, false); err != nil {
			b.log.Error("broker: loading group offsets", "partition", pr.key.part, "err", err)
			return
		}
	}
	pr.mu.Lock()
	if pr.role == roleLeader && pr.epoch == epoch {
		pr.loaded.Store(true)
		b.log.Info("broker: coordinating groups", "offsets_partition", pr.key.part, "epoch", epoch, "offsets_loaded", len(entries))
	}
	pr.mu.Unlock()
}

// offsetRecordKey is a committed offset's record key: the group, the
// topic and the partition.
func offsetRecordKey(k storage.OffsetKey) []byte {
	out := binary.AppendUvarint(nil, uint64(len(k.Group)))
	out = append(out, k.Group...)
	out = binary.AppendUvarint(out, uint64(len(k.Topic)))
	out = append(out, k.Topic...)
	return binary.BigEndian.AppendUint32(out, uint32(k.Partition))
}

// offsetRecordValue is its value: offset, leader epoch, metadata; nil
// (a tombstone) for a deleted one.
func offsetRecordValue(c storage.Committed) []byte {
	if c.Offset < 0 {
		return nil
	}
	out := binary.BigEndian.AppendUint64(nil, uint64(c.Offset))
	out = binary.BigEndian.AppendUint32(out, uint32(c.LeaderEpoch))
	return append(out, c.Metadata...)
}

var errOffsetRecord = errors.New("broker: malformed committed-offset record")

func parseOffsetRecord(key, value []byte) (storage.OffsetKey, storage.Committed, error) {
	var k storage.OffsetKey
	str := func() (string, bool) {
		n, w := binary.Uvarint(key)
		if w <= 0 || n > uint64(len(key)-w) {
			return "", false
		}
		s := string(key[w : w+int(n)])
		key = key[w+int(n):]
		return s, true
	}
	var ok1, ok2 bool
	k.Group, ok1 = str()
	k.Topic, ok2 = str()
	if !ok1 || !ok2 || len(key) != 4 {
		return k, storage.Committed{}, errOffsetRecord
	}
	k.Partition = int32(binary.BigEndian.Uint32(key))
	if value == nil {
		return k, storage.Committed{Offset: -1}, nil
	}
	if len(value) < 12 {
		return k, storage.Committed{}, errOffsetRecord
	}
	return k, storage.Committed{Offset: int64(binary.BigEndian.Uint64(value)), LeaderEpoch: int32(binary.BigEndian.Uint32(value[8:])), Metadata: string(value[12:])}, nil
}

// encodeOffsetBatch is one uncompressed record batch of the entries.
func encodeOffsetBatch(entries map[storage.OffsetKey]storage.Committed, now time.Time) []byte {
	var recs []byte
	i := 0
	for k, c := range entries {
		r := kmsg.Record{OffsetDelta: int32(i), Key: offsetRecordKey(k), Value: offsetRecordValue(c)}
		body := r.AppendTo(nil)
		r.Length = int32(len(body) - 1) // the zero length took one byte
		recs = r.AppendTo(recs)
		i++
	}
	ts := now.UnixMilli()
	rb := kmsg.RecordBatch{
		Length: int32(49 + len(recs)), Magic: 2, LastOffsetDelta: int32(i - 1),
		FirstTimestamp: ts, MaxTimestamp: ts, ProducerID: -1, ProducerEpoch: -1, FirstSequence: -1,
		NumRecords: int32(i), Records: recs,
	}
	out := rb.AppendTo(nil)
	binary.BigEndian.PutUint32(out[17:], crc32.Checksum(out[21:], crc32.MakeTable(crc32.Castagnoli)))
	return out
}

// decodeOffsetRecords applies the committed offsets of the batches to
// entries (later ones win) and returns the offset after the last batch.
func decodeOffsetRecords(batches []byte, entries map[storage.OffsetKey]storage.Committed) (int64, error) {
	var next int64
	for len(batches) > 0 {
		var rb kmsg.RecordBatch
		if len(batches) < 12 {
			return next, errOffsetRecord
		}
		size := int(int32(binary.BigEndian.Uint32(batches[8:]))) + 12
		if size < 61 || size > len(batches) {
			return next, errOffsetRecord
		}
		if err := rb.ReadFrom(batches[:size]); err != nil {
			return next, fmt.Errorf("%w: %v", errOffsetRecord, err)
		}
		recs := rb.Records
		for range rb.NumRecords {
			var r kmsg.Record
			n, w := binary.Varint(recs)
			if w <= 0 || n < 0 || int(n) > len(recs)-w {
				return next, errOffsetRecord
			}
			if err := r.ReadFrom(recs[:w+int(n)]); err != nil {
				return next, fmt.Errorf("%w: %v", errOffsetRecord, err)
			}
			recs = recs[w+int(n):]
			k, c, err := parseOffsetRecord(r.Key, r.Value)
			if err != nil {
				return next, err
			}
			entries[k] = c
		}
		next = rb.FirstOffset + int64(rb.LastOffsetDelta) + 1
		batches = batches[size:]
	}
	return next, nil
}

// commitReplicated writes committed offsets (Offset -1: deleted) to the
// group's offsets partition with acks=all and waits for the in-sync set;
// then the caller applies them to its offset store.
func (b *Broker) commitReplicated(group string, entries map[storage.OffsetKey]storage.Committed) int16 {
	if len(entries) == 0 {
		return 0
	}
	t := b.topics.get(offsetsTopic)
	if t == nil {
		return kerr.NotCoordinator.Code
	}
	batch := encodeOffsetBatch(entries, time.Now())
	infos, err := storage.ValidateBatches(batch, 0)
	if err != nil {
		b.log.Error("broker: encoding committed offsets", "group", group, "err", err)
		return kerr.UnknownServerError.Code
	}
	_, wait, err := b.clusterAppend(t, groupPartition(group), batch, infos, -1)
	if err != nil {
		return kerr.NotCoordinator.Code
	}
	timer := time.NewTimer(30 * time.Second)
	defer timer.Stop()
	select {
	case err = <-wait:
	case <-timer.C:
		return kerr.RequestTimedOut.Code
	case <-b.ctx.Done():
		return kerr.NotCoordinator.Code
	}
	var ke *kerr.Error
	if errors.As(err, &ke) {
		// Kafka's mapping of a failed offsets write.
		switch ke {
		case kerr.NotEnoughReplicas, kerr.NotEnoughReplicasAfterAppend, kerr.RequestTimedOut:
			return kerr.CoordinatorNotAvailable.Code
		}
		return kerr.NotCoordinator.Code
	}
	return 0
}

// replicateGroupDeletion writes tombstones for every offset a group has
// committed, before DeleteGroups removes them here (cluster mode; 0
// without it). An active group is refused later by deleteGroup.
func (b *Broker) replicateGroupDeletion(group string) int16 {
	if b.cl == nil || b.groups.active(group) {
		return 0
	}
	del := map[storage.OffsetKey]storage.Committed{}
	b.offsets.Each(func(k storage.OffsetKey, _ storage.Committed) {
		if k.Group == group {
			del[k] = storage.Committed{Offset: -1}
		}
	})
	return b.commitReplicated(group, del)
}
