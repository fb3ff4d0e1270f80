package broker

import (
	"errors"
	"fmt"
)

// The bounds pre-scan walks a request body before kmsg decodes it, and
// refuses a body whose counts the bytes cannot back.
//
// Why: kmsg v1.15.0 reads tagged fields with `for n := b.Uvarint(); n > 0;
// n--`, and its reader turns every call into a no-op once the bytes have
// run out, so the loop still runs n times: a 5-byte count of 2^32-1 in an
// 18-byte frame holds a core for minutes, and goes on after the client
// has left, since nothing can stop a goroutine. kmsg also allocates each
// array from its count before the elements prove it. Wire encoding stays
// kmsg's: this walker decodes nothing, it only follows the layout (the
// field order, per version, of kmsg's readFrom for each request the broker
// serves) far enough to check each count against the bytes left.
//
// The walker accepts exactly what kmsg's reader accepts (a property the
// tests check on random requests encoded by kmsg, and the fuzzer on
// arbitrary bytes), so it refuses only frames kmsg would refuse too, after
// looping. It cannot spin itself: every field it visits consumes at least
// one byte or fails, every tag at least two, and an array count above the
// bytes left fails at once, so its work is bounded by the body's length.

// wireKind is how a field is laid out; strings, bytes and arrays switch to
// their compact (uvarint length + 1) form in flexible versions.
type wireKind uint8

const (
	kindInt8 wireKind = iota // int8 and bool
	kindInt16
	kindInt32
	kindInt64
	kindUUID
	kindString     // a negative length fails, as kmsg's String
	kindNullString // a negative length is null
	kindBytes      // -1 reads as empty, other negative lengths fail (kmsg's Bytes)
	kindNullBytes  // a negative length is null
	kindArray      // a negative count reads as empty (null), as kmsg's ArrayLen
)

// wireField is one field of a request: its layout and the versions that
// carry it inline.
type wireField struct {
	kind     wireKind
	min, max int16       // versions with the field; max < 0: no upper bound
	elem     *wireStruct // the element of an array
}

// wireStruct is a request, an array element, or the content of a known
// tagged field.
type wireStruct struct {
	fields []wireField
	// tagged: the struct ends with its own tagged fields in flexible
	// versions (every struct, but not a primitive array element nor a
	// single tagged value).
	tagged bool
	// known are the tags kmsg decodes into fields, at any version, from
	// the tag's bytes; their content is walked too, since it can hold
	// counts of its own.
	known map[uint32]*wireStruct
}

func wfld(k wireKind) wireField { return wireField{kind: k, max: -1} }

var (
	wi8     = wfld(kindInt8)
	wi16    = wfld(kindInt16)
	wi32    = wfld(kindInt32)
	wi64    = wfld(kindInt64)
	wuuid   = wfld(kindUUID)
	wstr    = wfld(kindString)
	wnstr   = wfld(kindNullString)
	wbytes  = wfld(kindBytes)
	wnbytes = wfld(kindNullBytes)
)

// from and upTo restrict a field to versions; they return copies.
func (f wireField) from(v int16) wireField { f.min = v; return f }
func (f wireField) upTo(v int16) wireField { f.max = v; return f }

// warr is an array of structs with fields.
func warr(fields ...wireField) wireField {
	return wireField{kind: kindArray, max: -1, elem: &wireStruct{fields: fields, tagged: true}}
}

// warrOf is an array of a primitive (no tagged fields per element).
func warrOf(f wireField) wireField {
	return wireField{kind: kindArray, max: -1, elem: &wireStruct{fields: []wireField{f}}}
}

// warrS is an array of s.
func warrS(s *wireStruct) wireField { return wireField{kind: kindArray, max: -1, elem: s} }

// wmsg is a request or element struct with fields and known tags.
func wmsg(known map[uint32]*wireStruct, fields ...wireField) *wireStruct {
	return &wireStruct{fields: fields, tagged: true, known: known}
}

// wvalue is the content of a known tag holding one field.
func wvalue(f wireField) *wireStruct { return &wireStruct{fields: []wireField{f}} }

// requestShapes is the layout of every request the broker serves, from
// kmsg v1.15.0's readFrom of each. A key in supportedAPIs must be here
// (TestPrescanCoversSupportedAPIs), and each shape must walk every request
// kmsg encodes at every supported version (TestPrescanMatchesKmsg).
var requestShapes = map[int16]*wireStruct{
	0: wmsg(nil, // Produce
		wnstr.from(3), wi16, wi32, // TransactionID, Acks, TimeoutMillis
		warr(wstr.upTo(12), wuuid.from(13), // Topics: Topic, TopicID
			warr(wi32, wnbytes)), // Partitions: Partition, Records
	),
	1: wmsg(map[uint32]*wireStruct{ // Fetch
		0: wvalue(wnstr),         // ClusterID
		1: wmsg(nil, wi32, wi64), // ReplicaState: ID, Epoch
	},
		wi32.upTo(14), wi32, wi32, wi32.from(3), // ReplicaID, MaxWaitMillis, MinBytes, MaxBytes
		wi8.from(4), wi32.from(7), wi32.from(7), // IsolationLevel, SessionID, SessionEpoch
		warr(wstr.upTo(12), wuuid.from(13), // Topics: Topic, TopicID
			warrS(wmsg(map[uint32]*wireStruct{ // Partitions
				0: wvalue(wuuid), // ReplicaDirectoryID
				1: wvalue(wi64),  // HighWatermark
			},
				wi32, wi32.from(9), wi64, // Partition, CurrentLeaderEpoch, FetchOffset
				wi32.from(12), wi64.from(5), wi32))), // LastFetchedEpoch, LogStartOffset, PartitionMaxBytes
		warr(wstr.from(7).upTo(12), wuuid.from(13), warrOf(wi32)).from(7), // ForgottenTopics
		wstr.from(11), // Rack
	),
	2: wmsg(nil, // ListOffsets
		wi32, wi8.from(2), // ReplicaID, IsolationLevel
		warr(wstr, // Topics: Topic
			warr(wi32, wi32.from(4), wi64, wi32.upTo(0))), // Partitions: Partition, CurrentLeaderEpoch, Timestamp, MaxNumOffsets
		wi32.from(10), // TimeoutMillis
	),
	3: wmsg(nil, // Metadata
		warr(wuuid.from(10), wstr.upTo(9), wnstr.from(10)), // Topics: TopicID, Topic (nullable from v10)
		wi8.from(4), wi8.from(8).upTo(10), wi8.from(8), // AllowAutoTopicCreation, IncludeClusterAuthorizedOperations, IncludeTopicAuthorizedOperations
	),
	8: wmsg(nil, // OffsetCommit
		wstr, wi32.from(1), wstr.from(1), wnstr.from(7), wi64.from(2).upTo(4), // Group, Generation, MemberID, InstanceID, RetentionTimeMillis
		warr(wstr.upTo(9), wuuid.from(10), // Topics: Topic, TopicID
			warr(wi32, wi64, wi64.from(1).upTo(1), wi32.from(6), wnstr)), // Partitions: Partition, Offset, Timestamp, LeaderEpoch, Metadata
	),
	9: wmsg(nil, // OffsetFetch
		wstr.upTo(7),                     // Group
		warr(wstr, warrOf(wi32)).upTo(7), // Topics: Topic, Partitions
		warr(wstr, wnstr.from(9), wi32.from(9), // Groups: Group, MemberID, MemberEpoch
			warr(wstr.from(8).upTo(9), wuuid.from(10), warrOf(wi32))).from(8), // Topics: Topic, TopicID, Partitions
		wi8.from(7), // RequireStable
	),
	10: wmsg(nil, // FindCoordinator
		wstr.upTo(3), wi8.from(1), warrOf(wstr).from(4), // CoordinatorKey, CoordinatorType, CoordinatorKeys
	),
	11: wmsg(nil, // JoinGroup
		wstr, wi32, wi32.from(1), wstr, wnstr.from(5), wstr, // Group, SessionTimeoutMillis, RebalanceTimeoutMillis, MemberID, InstanceID, ProtocolType
		warr(wstr, wbytes), // Protocols: Name, Metadata
		wnstr.from(8),      // Reason
	),
	12: wmsg(nil, // Heartbeat
		wstr, wi32, wstr, wnstr.from(3), // Group, Generation, MemberID, InstanceID
	),
	13: wmsg(nil, // LeaveGroup
		wstr, wstr.upTo(2), // Group, MemberID
		warr(wstr, wnstr, wnstr.from(5)).from(3), // Members: MemberID, InstanceID, Reason
	),
	14: wmsg(nil, // SyncGroup
		wstr, wi32, wstr, wnstr.from(3), wnstr.from(5), wnstr.from(5), // Group, Generation, MemberID, InstanceID, ProtocolType, Protocol
		warr(wstr, wbytes), // GroupAssignment: MemberID, MemberAssignment
	),
	15: wmsg(nil, // DescribeGroups
		warrOf(wstr), wi8.from(3), // Groups, IncludeAuthorizedOperations
	),
	16: wmsg(nil, // ListGroups
		warrOf(wstr).from(4), warrOf(wstr).from(5), // StatesFilter, TypesFilter
	),
	17: wmsg(nil, wstr),                                                     // SaslHandshake: Mechanism
	36: wmsg(nil, wbytes),                                                   // SaslAuthenticate: SASLAuthBytes
	23: wmsg(nil, wi32.from(3), warr(wstr, warr(wi32, wi32.from(2), wi32))), // OffsetForLeaderEpoch: ReplicaID; Topics: Topic, Partitions: Partition, CurrentLeaderEpoch, LeaderEpoch
	29: wmsg(nil, wi8, wnstr, wi8.from(1), wnstr, wnstr, wi8, wi8),          // DescribeAcls: ResourceType, ResourceName, PatternType, Principal, Host, Operation, Permission
	30: wmsg(nil, warr(wi8, wstr, wi8.from(1), wstr, wstr, wi8, wi8)),       // CreateAcls: Creations (as DescribeAcls, names not nullable)
	31: wmsg(nil, warr(wi8, wnstr, wi8.from(1), wnstr, wnstr, wi8, wi8)),    // DeleteAcls: Filters (as DescribeAcls)
	33: wmsg(nil, warr(wi8, wstr, warr(wstr, wnstr)), wi8),                  // AlterConfigs: Resources (Type, Name, Configs: Name, Value), ValidateOnly
	44: wmsg(nil, warr(wi8, wstr, warr(wstr, wi8, wnstr)), wi8),             // IncrementalAlterConfigs: Resources (Type, Name, Configs: Name, Op, Value), ValidateOnly
	35: wmsg(nil, warr(wstr, warrOf(wi32))),                                 // DescribeLogDirs: Topics (nullable): Topic, Partitions
	47: wmsg(nil, wstr, warr(wstr, warr(wi32))),                             // OffsetDelete: Group, Topics: Topic, Partitions: Partition
	43: wmsg(nil, wi8.from(1), warr(wstr, warrOf(wi32)), wi32),              // ElectLeaders: ElectionType, Topics (nullable): Topic, Partitions; TimeoutMillis
	45: wmsg(nil, wi32, wi8.from(1), warr(wstr, warr(wi32, warrOf(wi32)))),  // AlterPartitionReassignments: TimeoutMillis, AllowReplicationFactorChange, Topics: Topic, Partitions: Partition, Replicas (nullable)
	46: wmsg(nil, wi32, warr(wstr, warrOf(wi32))),                           // ListPartitionReassignments: TimeoutMillis, Topics (nullable): Topic, Partitions
	42: wmsg(nil, warrOf(wstr)),                                             // DeleteGroups: Groups
	60: wmsg(nil, wi8, wi8.from(1), wi8.from(2)),                            // DescribeCluster: IncludeClusterAuthorizedOperations, EndpointType, IncludeFencedBrokers
	18: wmsg(nil, // ApiVersions
		wstr.from(3), wstr.from(3), wnstr.from(5), wi32.from(5),
	),
	19: wmsg(nil, // CreateTopics
		warr(wstr, wi32, wi16, // Topics: Topic, NumPartitions, ReplicationFactor
			warr(wi32, warrOf(wi32)), // ReplicaAssignment: Partition, Replicas
			warr(wstr, wnstr)),       // Configs: Name, Value
		wi32, wi8.from(1), // TimeoutMillis, ValidateOnly
	),
	20: wmsg(nil, // DeleteTopics
		warrOf(wstr).upTo(5), warr(wnstr, wuuid).from(6), wi32, // TopicNames, Topics, TimeoutMillis
	),
	21: wmsg(nil, // DeleteRecords
		warr(wstr, warr(wi32, wi64)), wi32, // Topics: Topic, Partitions: Partition, Offset; TimeoutMillis
	),
	22: wmsg(nil, // InitProducerID
		wnstr, wi32, wi64.from(3), wi16.from(3), // TransactionalID, TransactionTimeoutMillis, ProducerID, ProducerEpoch
	),
	32: wmsg(nil, // DescribeConfigs
		warr(wi8, wstr, warrOf(wstr)), // Resources: ResourceType, ResourceName, ConfigNames
		wi8.from(1), wi8.from(3),      // IncludeSynonyms, IncludeDocumentation
	),
	37: wmsg(nil, // CreatePartitions
		warr(wstr, wi32, warr(warrOf(wi32))), // Topics: Topic, Count, Assignment: Replicas
		wi32, wi8,                            // TimeoutMillis, ValidateOnly
	),
}

// errPrescan is a body whose layout or counts do not fit its bytes.
var errPrescan = errors.New("request body does not fit its counts")

// prescanner walks one body. steps counts the fields and tags visited, so
// tests can check the walk is bounded by the input.
type prescanner struct {
	b        []byte
	version  int16
	flexible bool
	steps    int
	// exact refuses bytes left over in a known tag, which kmsg ignores:
	// tests set it to check that a layout reads all that kmsg writes.
	exact bool
}

// prescanBody checks a request body against the shape of key at version.
// It reports the bytes left after the walk (kmsg ignores trailing bytes,
// and so does the broker).
func prescanBody(key, version int16, flexible bool, body []byte) (rest int, err error) {
	s := requestShapes[key]
	if s == nil {
		return 0, fmt.Errorf("%w: no layout for api key %d", errPrescan, key)
	}
	p := prescanner{b: body, version: version, flexible: flexible}
	if err := p.walk(s); err != nil {
		return 0, err
	}
	return len(p.b), nil
}

func (p *prescanner) fail(what string, args ...any) error {
	return fmt.Errorf("%w: %s", errPrescan, fmt.Sprintf(what, args...))
}

func (p *prescanner) walk(s *wireStruct) error {
	for i := range s.fields {
		f := &s.fields[i]
		if p.version < f.min || f.max >= 0 && p.version > f.max {
			continue
		}
		if err := p.field(f); err != nil {
			return err
		}
	}
	if s.tagged && p.flexible {
		return p.tags(s.known)
	}
	return nil
}

func (p *prescanner) field(f *wireField) error {
	p.steps++
	switch f.kind {
	case kindInt8:
		return p.skip(1)
	case kindInt16:
		return p.skip(2)
	case kindInt32:
		return p.skip(4)
	case kindInt64:
		return p.skip(8)
	case kindUUID:
		return p.skip(16)
	case kindString, kindNullString, kindBytes, kindNullBytes:
		n, err := p.length(f.kind)
		if err != nil {
			return err
		}
		return p.skip(n)
	case kindArray:
		n, err := p.arrayLen()
		if err != nil {
			return err
		}
		for i := int32(0); i < n; i++ {
			if err := p.walk(f.elem); err != nil {
				return err
			}
		}
		return nil
	}
	return p.fail("unknown field kind %d", f.kind)
}

// length reads the length of a string or bytes field and returns the
// bytes it spans (0 for null or empty), failing where kmsg's Span would.
func (p *prescanner) length(k wireKind) (int, error) {
	var l int
	if p.flexible {
		u, err := p.uvarint()
		if err != nil {
			return 0, err
		}
		l = int(u) - 1
	} else if k == kindString || k == kindNullString {
		if len(p.b) < 2 {
			return 0, p.fail("string length past the end")
		}
		l = int(int16(uint16(p.b[0])<<8 | uint16(p.b[1])))
		p.b = p.b[2:]
	} else {
		if len(p.b) < 4 {
			return 0, p.fail("bytes length past the end")
		}
		l = int(int32(uint32(p.b[0])<<24 | uint32(p.b[1])<<16 | uint32(p.b[2])<<8 | uint32(p.b[3])))
		p.b = p.b[4:]
	}
	switch {
	case l >= 0:
		return l, nil
	case k == kindNullString || k == kindNullBytes, k == kindBytes && l == -1:
		return 0, nil
	}
	return 0, p.fail("negative length %d", l)
}

// arrayLen reads an array count as kmsg's ArrayLen and CompactArrayLen
// do, including their int32 wrap: a count above the bytes left fails (each
// element takes at least a byte), a negative one reads as empty.
func (p *prescanner) arrayLen() (int32, error) {
	var r int32
	if p.flexible {
		u, err := p.uvarint()
		if err != nil {
			return 0, err
		}
		r = int32(u) - 1
	} else {
		if len(p.b) < 4 {
			return 0, p.fail("array count past the end")
		}
		r = int32(uint32(p.b[0])<<24 | uint32(p.b[1])<<16 | uint32(p.b[2])<<8 | uint32(p.b[3]))
		p.b = p.b[4:]
	}
	if int(r) > len(p.b) {
		return 0, p.fail("array count %d with %d bytes left", r, len(p.b))
	}
	return r, nil
}

// tags walks a tagged-field section. Each tag takes at least two bytes
// (its key and its size), so a count above half the bytes left fails
// before any tag is read.
func (p *prescanner) tags(known map[uint32]*wireStruct) error {
	n, err := p.uvarint()
	if err != nil {
		return err
	}
	if uint64(n) > uint64(len(p.b))/2 {
		return p.fail("tag count %d with %d bytes left", n, len(p.b))
	}
	for ; n > 0; n-- {
		p.steps++
		key, err := p.uvarint()
		if err != nil {
			return err
		}
		size, err := p.uvarint()
		if err != nil {
			return err
		}
		if uint64(size) > uint64(len(p.b)) {
			return p.fail("tag %d of %d bytes with %d left", key, size, len(p.b))
		}
		content := p.b[:size]
		p.b = p.b[size:]
		if s := known[key]; s != nil {
			// kmsg decodes the tag from its own bytes and, as for a
			// whole body, does not mind bytes left over.
			sub := prescanner{b: content, version: p.version, flexible: p.flexible, exact: p.exact}
			err := sub.walk(s)
			p.steps += sub.steps
			if err == nil && p.exact && len(sub.b) > 0 {
				err = sub.fail("%d bytes left over", len(sub.b))
			}
			if err != nil {
				return fmt.Errorf("tag %d: %w", key, err)
			}
		}
	}
	return nil
}

func (p *prescanner) skip(n int) error {
	if n > len(p.b) {
		return p.fail("%d bytes wanted, %d left", n, len(p.b))
	}
	p.b = p.b[n:]
	return nil
}

// uvarint reads a uvarint of at most 32 bits, as kmsg's: at most five
// bytes, the fifth at most 0x0f.
func (p *prescanner) uvarint() (uint32, error) {
	var x uint32
	for i := 0; i < 5; i++ {
		if i >= len(p.b) {
			return 0, p.fail("uvarint past the end")
		}
		c := p.b[i]
		if i == 4 {
			if c > 0x0f {
				return 0, p.fail("uvarint overflows 32 bits")
			}
			x |= uint32(c) << 28
			p.b = p.b[5:]
			return x, nil
		}
		x |= uint32(c&0x7f) << (7 * i)
		if c&0x80 == 0 {
			p.b = p.b[i+1:]
			return x, nil
		}
	}
	panic("unreachable")
}
