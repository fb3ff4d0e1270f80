package broker

// The replica fetch batch between brokers: a follower's fetches of the
// partitions it follows from one leader, and the leader's answers, each
// an internal/replica frame.
//
//	request:  "MRF1" uvarint(waitMs) uvarint(n) n × (string topic, uvarint partition, bytes frame)
//	response: "MRF1" uvarint(0)      uvarint(n) n × (the same, answer frames)
//
// string and bytes are uvarint length-prefixed.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

const replicaFetchMagic = "MRF1"

type replicaFetchPart struct {
	topic string
	part  int32
	frame []byte
}

type replicaFetchBatch struct {
	waitMs uint32
	parts  []replicaFetchPart
}

var errReplicaFetchFrame = errors.New("broker: malformed replica fetch frame")

func encodeReplicaFetch(dst []byte, b *replicaFetchBatch) []byte {
	dst = append(dst, replicaFetchMagic...)
	dst = binary.AppendUvarint(dst, uint64(b.waitMs))
	dst = binary.AppendUvarint(dst, uint64(len(b.parts)))
	for _, p := range b.parts {
		dst = binary.AppendUvarint(dst, uint64(len(p.topic)))
		dst = append(dst, p.topic...)
		dst = binary.AppendUvarint(dst, uint64(p.part))
		dst = binary.AppendUvarint(dst, uint64(len(p.frame)))
		dst = append(dst, p.frame...)
	}
	return dst
}

// decodeReplicaFetch decodes a batch; its frames alias buf.
func decodeReplicaFetch(buf []byte) (replicaFetchBatch, error) {
	var b replicaFetchBatch
	if len(buf) < len(replicaFetchMagic) || string(buf[:len(replicaFetchMagic)]) != replicaFetchMagic {
		return b, fmt.Errorf("%w: no %s magic", errReplicaFetchFrame, replicaFetchMagic)
	}
	buf = buf[len(replicaFetchMagic):]
	next := func(what string, limit uint64) (uint64, error) {
		v, n := binary.Uvarint(buf)
		if n <= 0 {
			return 0, fmt.Errorf("%w: %s cut short", errReplicaFetchFrame, what)
		}
		if v > limit {
			return 0, fmt.Errorf("%w: %s %d above %d", errReplicaFetchFrame, what, v, limit)
		}
		buf = buf[n:]
		return v, nil
	}
	take := func(what string) ([]byte, error) {
		n, err := next(what+" length", math.MaxInt32)
		if err != nil {
			return nil, err
		}
		if n > uint64(len(buf)) {
			return nil, fmt.Errorf("%w: %s of %d bytes, %d left", errReplicaFetchFrame, what, n, len(buf))
		}
		out := buf[:n:n]
		buf = buf[n:]
		return out, nil
	}
	w, err := next("wait", math.MaxUint32)
	if err != nil {
		return b, err
	}
	b.waitMs = uint32(w)
	// Each part takes at least 3 bytes: the count cannot claim more.
	n, err := next("partition count", uint64(len(buf)/3))
	if err != nil {
		return b, err
	}
	b.parts = make([]replicaFetchPart, 0, n)
	for range n {
		topic, err := take("topic")
		if err != nil {
			return b, err
		}
		part, err := next("partition", math.MaxInt32)
		if err != nil {
			return b, err
		}
		frame, err := take("frame")
		if err != nil {
			return b, err
		}
		b.parts = append(b.parts, replicaFetchPart{topic: string(topic), part: int32(part), frame: frame})
	}
	if len(buf) != 0 {
		return b, fmt.Errorf("%w: %d bytes after the last partition", errReplicaFetchFrame, len(buf))
	}
	return b, nil
}
