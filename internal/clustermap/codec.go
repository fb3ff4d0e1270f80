package clustermap

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// formatVersion is the first byte of every encoded command and map. A
// runtime refuses a version it does not know rather than guess: every
// replica must decode a log entry to the same command.
const formatVersion = 1

// Encode returns the bytes raft carries for c: the format version, the
// kind, then the command as JSON. encoding/json writes struct fields in
// declaration order, so equal commands encode to equal bytes.
func Encode(c Command) ([]byte, error) {
	if c == nil {
		return nil, fmt.Errorf("nil command: %w", ErrBadCommand)
	}
	k := c.Kind()
	if k == 0 || k >= kindEnd {
		return nil, fmt.Errorf("command kind %d: %w", k, ErrBadCommand)
	}
	body, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("encode %v: %w: %w", k, ErrBadCommand, err)
	}
	return append([]byte{formatVersion, byte(k)}, body...), nil
}

// Decode reads a command Encode wrote. Unknown fields, trailing bytes and
// unknown kinds are refused: a command this version cannot read in full
// must not be half applied. Decode checks the shape only; Apply checks
// the values against the map.
func Decode(b []byte) (Command, error) {
	if len(b) < 2 {
		return nil, fmt.Errorf("command of %d bytes: %w", len(b), ErrBadCommand)
	}
	if b[0] != formatVersion {
		return nil, fmt.Errorf("command format %d: %w", b[0], ErrBadCommand)
	}
	k := Kind(b[1])
	var c Command
	var err error
	switch k {
	case KindBootstrap:
		c, err = decodeAs[Bootstrap](b[2:])
	case KindMemberJoin:
		c, err = decodeAs[MemberJoin](b[2:])
	case KindMemberAlive:
		c, err = decodeAs[MemberAlive](b[2:])
	case KindMemberDead:
		c, err = decodeAs[MemberDead](b[2:])
	case KindMemberDrain:
		c, err = decodeAs[MemberDrain](b[2:])
	case KindMemberLeave:
		c, err = decodeAs[MemberLeave](b[2:])
	case KindTick:
		c, err = decodeAs[Tick](b[2:])
	case KindAssignSlots:
		c, err = decodeAs[AssignSlots](b[2:])
	case KindISRChange:
		c, err = decodeAs[ISRChange](b[2:])
	case KindMoveStart:
		c, err = decodeAs[MoveStart](b[2:])
	case KindMoveProgress:
		c, err = decodeAs[MoveProgress](b[2:])
	case KindMoveDone:
		c, err = decodeAs[MoveDone](b[2:])
	case KindMoveAbort:
		c, err = decodeAs[MoveAbort](b[2:])
	case KindLeaderTransfer:
		c, err = decodeAs[LeaderTransfer](b[2:])
	case KindElectLeaders:
		c, err = decodeAs[ElectLeaders](b[2:])
	case KindRemoveReplica:
		c, err = decodeAs[RemoveReplica](b[2:])
	case KindCreateTopic:
		c, err = decodeAs[CreateTopic](b[2:])
	case KindDeleteTopic:
		c, err = decodeAs[DeleteTopic](b[2:])
	case KindReassignPartition:
		c, err = decodeAs[ReassignPartition](b[2:])
	case KindSetTopicConfig:
		c, err = decodeAs[SetTopicConfig](b[2:])
	case KindAddPartitions:
		c, err = decodeAs[AddPartitions](b[2:])
	default:
		return nil, fmt.Errorf("command kind %d: %w", b[1], ErrBadCommand)
	}
	if err != nil {
		return nil, fmt.Errorf("decode %v: %w", k, err)
	}
	// The one enum a command carries: a missing phase reads as 0, which
	// no encoder writes.
	if mp, ok := c.(MoveProgress); ok && (mp.Phase < PhaseCopying || mp.Phase > PhaseSwitching) {
		return nil, fmt.Errorf("decode %v: phase %d: %w", k, mp.Phase, ErrBadCommand)
	}
	return c, nil
}

func decodeAs[T Command](body []byte) (Command, error) {
	var v T
	if err := strictJSON(body, &v); err != nil {
		return nil, err
	}
	return v, nil
}

// strictJSON decodes exactly one JSON value with no unknown fields.
func strictJSON(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %w", ErrBadCommand, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return fmt.Errorf("trailing data: %w", ErrBadCommand)
	}
	return nil
}

// EncodeMap returns a snapshot of m (raft snapshots, a runtime catching
// up): the format version, then the map as JSON.
func EncodeMap(m *Map) ([]byte, error) {
	body, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode map: %w", err)
	}
	return append([]byte{formatVersion}, body...), nil
}

// DecodeMap reads a snapshot EncodeMap wrote and checks its invariants,
// so a corrupt snapshot is refused rather than applied to.
func DecodeMap(b []byte) (*Map, error) {
	if len(b) < 1 || b[0] != formatVersion {
		return nil, fmt.Errorf("map snapshot format: %w", ErrCorrupt)
	}
	m := new(Map)
	if err := strictJSON(b[1:], m); err != nil {
		return nil, fmt.Errorf("map snapshot: %w: %w", ErrCorrupt, err)
	}
	if err := m.Check(); err != nil {
		return nil, err
	}
	return m, nil
}
