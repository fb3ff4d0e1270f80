package mechapubsub

import (
	"slices"
	"strconv"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Metadata keys a delivered record carries besides its headers; the same
// names as contrib's pubsub.kafka and bindings.kafka, so apps can move
// between them.
const (
	MetaKey       = "__key"
	MetaTopic     = "__topic"
	MetaPartition = "__partition"
	MetaOffset    = "__offset"
	MetaTimestamp = "__timestamp"
)

// Metadata keys that set a published record's key rather than a header:
// partitionKey (Dapr's kafka components), key, and __key (so a delivered
// record's metadata can be published again unchanged).
var keyFields = []string{"partitionKey", "key", MetaKey}

// NewRecord builds the record for data: its key from md's partitionKey,
// key or __key (first found), every other entry a header, in name order
// so that records are reproducible.
func NewRecord(topic string, data []byte, md map[string]string) *kgo.Record {
	r := &kgo.Record{Topic: topic, Value: data}
	for _, k := range keyFields {
		if v, ok := md[k]; ok {
			r.Key = []byte(v)
			break
		}
	}
	names := make([]string, 0, len(md))
	for k := range md {
		if !slices.Contains(keyFields, k) {
			names = append(names, k)
		}
	}
	slices.Sort(names)
	for _, k := range names {
		r.Headers = append(r.Headers, kgo.RecordHeader{Key: k, Value: []byte(md[k])})
	}
	return r
}

// RecordMetadata is the metadata of a delivered record: its headers, then
// __topic, __partition, __offset, __timestamp (Unix ms) and, when the
// record has a key, __key. The record's own fields win over a header of
// the same name.
func RecordMetadata(r *kgo.Record) map[string]string {
	md := make(map[string]string, len(r.Headers)+5)
	for _, h := range r.Headers {
		md[h.Key] = string(h.Value)
	}
	md[MetaTopic] = r.Topic
	md[MetaPartition] = strconv.FormatInt(int64(r.Partition), 10)
	md[MetaOffset] = strconv.FormatInt(r.Offset, 10)
	md[MetaTimestamp] = strconv.FormatInt(r.Timestamp.UnixMilli(), 10)
	if r.Key != nil {
		md[MetaKey] = string(r.Key)
	}
	return md
}
