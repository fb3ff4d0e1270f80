package gen

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// A source partition's buffer pauses its fetches at maxBuffered bytes
// and resumes them at resumeAt, which bounds the memory a partition far
// ahead in event time can take. A record counts its key and value and
// recordOverhead for the rest.
const (
	maxBuffered = 4 << 20
	resumeAt    = 1 << 20
	// recordOverhead is about the size of a kgo.Record.
	recordOverhead = 256
)

// cost is what a buffered record counts against maxBuffered.
func cost(r *kgo.Record) int { return len(r.Key) + len(r.Value) + recordOverhead }

// source reads every partition of a topic from its start offset to its
// end offset as of when it opened, and hands out the records merged in
// timestamp order across partitions, each partition's own order kept. A
// replay's pacing then follows event time, not the order in which
// fetches happen to come back. It belongs to the goroutine that calls
// next.
type source struct {
	cl    *kgo.Client // nil when every partition is empty
	topic string
	parts []int32
	end   map[int32]int64 // the end offsets when the source opened
	// want is the next offset expected per partition: a record below it
	// was already handed out (a refetch after a pause).
	want   map[int32]int64
	buf    map[int32][]*kgo.Record
	bytes  map[int32]int  // the cost of the records in buf
	done   map[int32]bool // read up to its end
	paused map[int32]bool
}

// openSource lists the source's partitions and offsets and starts
// consuming.
func openSource(ctx context.Context, cfg Config, adm *kadm.Client) (*source, error) {
	topic := cfg.FromTopic
	details, err := adm.ListTopics(ctx, topic)
	if err != nil {
		return nil, fmt.Errorf("gen: list topic %s: %w", topic, err)
	}
	d, ok := details[topic]
	if !ok || errors.Is(d.Err, kerr.UnknownTopicOrPartition) || (d.Err == nil && len(d.Partitions) == 0) {
		return nil, &ConfigError{Field: "from-topic", Problem: fmt.Sprintf("topic %q does not exist", topic)}
	}
	if d.Err != nil {
		return nil, fmt.Errorf("gen: topic %s: %w", topic, d.Err)
	}
	starts, err := adm.ListStartOffsets(ctx, topic)
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("gen: start offsets of %s: %w", topic, err)
	}
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("gen: end offsets of %s: %w", topic, err)
	}
	s := &source{topic: topic, parts: d.Partitions.Numbers(), end: map[int32]int64{}, want: map[int32]int64{},
		buf: map[int32][]*kgo.Record{}, bytes: map[int32]int{}, done: map[int32]bool{}, paused: map[int32]bool{}}
	slices.Sort(s.parts)
	from := map[int32]kgo.Offset{}
	for _, p := range s.parts {
		so, _ := starts.Lookup(topic, p)
		eo, _ := ends.Lookup(topic, p)
		s.end[p], s.want[p] = eo.Offset, so.Offset
		if so.Offset >= eo.Offset {
			s.done[p] = true
			continue
		}
		from[p] = kgo.NewOffset().At(so.Offset)
	}
	if len(from) > 0 {
		opts := append([]kgo.Opt{kgo.SeedBrokers(cfg.Brokers...),
			kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: from})}, cfg.ClientOptions...)
		if s.cl, err = kgo.NewClient(opts...); err != nil {
			return nil, err
		}
	}
	return s, nil
}

func (s *source) close() {
	if s.cl != nil {
		s.cl.Close()
	}
}

// next returns the record with the earliest timestamp among the heads of
// the partitions, once every partition not yet read to its end has one;
// nil at the end of the source. It fails only when ctx ends.
func (s *source) next(ctx context.Context) (*kgo.Record, error) {
	for {
		ready, best := true, int32(-1)
		for _, p := range s.parts {
			q := s.buf[p]
			if len(q) == 0 {
				if !s.done[p] {
					ready = false
					break
				}
				continue
			}
			if best < 0 || q[0].Timestamp.Before(s.buf[best][0].Timestamp) {
				best = p
			}
		}
		if ready {
			if best < 0 {
				return nil, nil
			}
			r := s.buf[best][0]
			s.buf[best] = s.buf[best][1:]
			s.bytes[best] -= cost(r)
			if s.paused[best] && !s.done[best] && s.bytes[best] <= resumeAt {
				s.cl.ResumeFetchPartitions(map[string][]int32{s.topic: {best}})
				s.paused[best] = false
			}
			return r, nil
		}
		if err := s.poll(ctx); err != nil {
			return nil, err
		}
	}
}

// poll fetches records into the partitions' buffers.
func (s *source) poll(ctx context.Context) error {
	fs := s.cl.PollFetches(ctx)
	if err := ctx.Err(); err != nil {
		return err
	}
	if fs.IsClientClosed() {
		return kgo.ErrClientClosed
	}
	var pause []int32
	fs.EachRecord(func(r *kgo.Record) {
		p := r.Partition
		if s.done[p] || r.Offset < s.want[p] {
			return
		}
		if r.Offset < s.end[p] {
			s.buf[p] = append(s.buf[p], r)
			s.bytes[p] += cost(r)
			s.want[p] = r.Offset + 1
		}
		if r.Offset >= s.end[p]-1 {
			s.done[p] = true
			pause = append(pause, p)
		} else if !s.paused[p] && s.bytes[p] >= maxBuffered {
			s.paused[p] = true
			pause = append(pause, p)
		}
	})
	if len(pause) > 0 {
		s.cl.PauseFetchPartitions(map[string][]int32{s.topic: pause})
	}
	return nil
}

// variant makes the copies of a record for doubling.
type variant struct {
	r     *kgo.Record
	vary  bool
	found bool
	// value[start:end] is the Vary field's JSON value.
	start, end int
	// keyVaries is set when the key equals the field's value.
	keyVaries bool
}

// newVariant finds field in r's value; with field empty, copies are
// identical.
func newVariant(r *kgo.Record, field string) variant {
	v := variant{r: r, vary: field != ""}
	if !v.vary {
		return v
	}
	v.start, v.end, v.found = findField(r.Value, field)
	if v.found && r.Key != nil {
		v.keyVaries = bytes.Equal(r.Key, keyText(r.Value[v.start:v.end]))
	}
	return v
}

// copy returns copy i's key and value: the record's own for copy 0 or
// without a field to vary.
func (v variant) copy(i int) (key, value []byte) {
	r := v.r
	if i == 0 || !v.found {
		return r.Key, r.Value
	}
	suffix := "-" + strconv.Itoa(i)
	raw := r.Value[v.start:v.end]
	value = make([]byte, 0, len(r.Value)+len(suffix)+2)
	value = append(value, r.Value[:v.start]...)
	if raw[0] == '"' {
		// Appending inside the quotes keeps any escapes intact.
		value = append(value, raw[:len(raw)-1]...)
		value = append(value, suffix...)
		value = append(value, '"')
	} else {
		value = appendQuoted(value, string(raw)+suffix)
	}
	value = append(value, r.Value[v.end:]...)
	key = r.Key
	if v.keyVaries {
		key = append(append(make([]byte, 0, len(r.Key)+len(suffix)), r.Key...), suffix...)
	}
	return key, value
}

// findField returns the span of a top-level field's value in a JSON
// object; ok is false when value is not an object or lacks the field. It
// scans instead of decoding, as it runs for every source record, and
// trusts the broker's values to be JSON: it only guarantees a span within
// value.
func findField(value []byte, field string) (start, end int, ok bool) {
	i := skipSpace(value, 0)
	if i >= len(value) || value[i] != '{' {
		return 0, 0, false
	}
	i++
	for {
		i = skipSpace(value, i)
		if i >= len(value) || value[i] != '"' {
			return 0, 0, false // the end of the object, or not JSON
		}
		ks := i
		if i = skipString(value, i); i < 0 {
			return 0, 0, false
		}
		key := value[ks:i]
		if i = skipSpace(value, i); i >= len(value) || value[i] != ':' {
			return 0, 0, false
		}
		start = skipSpace(value, i+1)
		if end = skipValue(value, start); end <= start {
			return 0, 0, false
		}
		if string(keyText(key)) == field {
			return start, end, true
		}
		if i = skipSpace(value, end); i >= len(value) || value[i] != ',' {
			return 0, 0, false
		}
		i++
	}
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the index after the string opening at b[i], or -1.
func skipString(b []byte, i int) int {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return -1
}

// skipValue returns the index after the value at b[i], or -1.
func skipValue(b []byte, i int) int {
	if i >= len(b) {
		return -1
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for ; i < len(b); i++ {
			switch b[i] {
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return i + 1
				}
			case '"':
				if i = skipString(b, i); i < 0 {
					return -1
				}
				i--
			}
		}
		return -1
	}
	for ; i < len(b); i++ {
		switch b[i] {
		case ',', '}', ']', ' ', '\t', '\n', '\r':
			return i
		}
	}
	return i
}
