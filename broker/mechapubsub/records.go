package mechapubsub

import (
	"slices"
	"strconv"

	"github.com/IBM/sarama"
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

// ProducerMessage builds the record for data: its key from md's
// partitionKey, key or __key (first found), every other entry a header,
// in name order so that records are reproducible.
func ProducerMessage(topic string, data []byte, md map[string]string) *sarama.ProducerMessage {
	m := &sarama.ProducerMessage{Topic: topic, Value: sarama.ByteEncoder(data)}
	for _, k := range keyFields {
		if v, ok := md[k]; ok {
			m.Key = sarama.StringEncoder(v)
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
		m.Headers = append(m.Headers, sarama.RecordHeader{Key: []byte(k), Value: []byte(md[k])})
	}
	return m
}

// RecordMetadata is the metadata of a delivered record: its headers, then
// __topic, __partition, __offset, __timestamp (Unix ms) and, when the
// record has a key, __key. The record's own fields win over a header of
// the same name.
func RecordMetadata(m *sarama.ConsumerMessage) map[string]string {
	md := make(map[string]string, len(m.Headers)+5)
	for _, h := range m.Headers {
		if h != nil {
			md[string(h.Key)] = string(h.Value)
		}
	}
	md[MetaTopic] = m.Topic
	md[MetaPartition] = strconv.FormatInt(int64(m.Partition), 10)
	md[MetaOffset] = strconv.FormatInt(m.Offset, 10)
	md[MetaTimestamp] = strconv.FormatInt(m.Timestamp.UnixMilli(), 10)
	if m.Key != nil {
		md[MetaKey] = string(m.Key)
	}
	return md
}
