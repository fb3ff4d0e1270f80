// Package cluster routes Crux (state.crux) operations to the leaders of
// their slots: one store across the members of a mecha cluster, each
// slot served by the member the cluster map (internal/clustermap) names
// as its leader.
//
// # Pieces
//
//   - Router is a statestore.Backend: state.crux calls it instead of its
//     engine when the runtime sets statestore.ComponentDefaults.Backend
//     (Node.Backend does). For each key it computes the slot
//     (statestore.SlotOf, the same function as clustermap.Slot); when this
//     member leads the slot the engine is called in-process (no socket, no
//     encoding), otherwise the request is encoded and sent to the leader
//     over muxconn. Semantics (ETags, first-write, TTL, transactions) stay
//     the engine's: the router only moves requests, and the engine's
//     errors come back with their sentinel (errors.Is) and message, so
//     the component maps them to the same Dapr errors as on one node.
//   - Server serves the requests other members route here, from the
//     engines attached to it (one per state.crux component), for the
//     slots this member leads.
//   - Clients is the pool of muxconn clients, one per member, dialled at
//     first use and closed when the member leaves the map.
//   - MapSource (MapVar) gives the current map and waits for a newer one.
//
// # Wire format
//
// Method numbers are 0x0200–0x02FF (MethodFirst, MethodLast). A request
// is
//
//	version  byte    WireVersion (1)
//	store    string  the component's name
//	slots    count, then per slot: slot uvarint, epoch uvarint (the caller's map)
//	body     by method, below
//
// Integers are uvarints (minimal: one encoding per message), ttl and
// expiry zigzag varints; a string or byte string is a uvarint length and
// the bytes; a count is a uvarint. A write is a flags byte (1 delete,
// 2 first-write, 4 has an etag), key, etag if flagged, and for a set the
// value and ttl (seconds: 0 none, -1 remove, >0 expire). An item is
// version, expiry (Unix nanoseconds, 0 for none) and value; a scan's
// items start with their key. Content type and metadata do not travel:
// the component turns them into the Write (value bytes, ttl) before the
// router sees it.
//
//	method          0x     slots  request body               ok answer body
//	Get             0200   1      key                        found byte (0/1), item if found
//	Set             0201   1      write                      count (1), version
//	Delete          0202   1      write (delete flag)        (empty)
//	Apply           0203   1..N   count, writes              count, version per write
//	BulkGet         0204   1      count, keys                count, per key: status, found byte, item
//	BulkSet         0205   1      count, writes              count, per write: status, version
//	Scan            0206   1..N   prefix, after, limit       count, items (key first), sorted
//	DeleteChildren  0207   1..N   prefix                     count of keys removed
//
// An answer starts with a status byte: 0 for ok (then the body above),
// or an error code (Code*) then, for CodeMoved, slot, epoch and leader
// (string, "" when leaderless), and for any other code the message.
// BulkGet and BulkSet carry a status per key in the same form: their
// keys fail or succeed one by one. The codes keep the engine's errors:
// CodeETagMismatch is statestore.ErrETagMismatch (the component's
// state.ETagError, 409), CodeETagInvalid ErrETagInvalid (400),
// CodeBadTTL, CodeValueTooBig, CodeKeyEmpty, CodeKeyTooLong and
// CodeBadRequest are input errors, CodeNoSpace, CodeClosed and CodeFailed
// the engine's own, CodeUnavailable retriable, CodeInternal the rest,
// and CodeRetry says nothing of the request was written (refused before
// it was logged: the member's map is behind, or it is taking the slot's
// leadership; or a deposed leader's strong write its successor's log
// does not hold), so the caller sends it again.
// DecodeRequest and DecodeResponse refuse anything else (trailing bytes,
// counts over the bytes left, slots out of range, a single-slot method
// with several slots) with an error wrapping ErrMalformed; the fuzzers
// FuzzDecodeRequest and FuzzDecodeResponse hold them to it.
//
// # Moved, and retries
//
// A Server serves a request only if its map names this member the leader
// of every slot of the request at the request's epoch or a newer one. If
// the request's epoch is newer than its own map's, it first waits (up to
// DefaultMapWait, 2 s) for its map to catch up, so that a deposed leader
// that has not heard does not serve, and a new leader that has not heard
// does not send the caller back; still behind, it answers CodeRetry. If
// another member leads, it answers CodeMoved with the slot, its epoch and
// its leader.
//
// On CodeMoved a Router waits (up to RouterConfig.MapWait, 2 s by
// default) for its MapSource to hold the slot at the answered epoch or
// newer, then sends the request to the leader that map names. On
// CodeRetry, or a "moved" that names nothing newer, it backs off (5 ms,
// doubling up to 200 ms) and sends it again; a runtime stopping refuses
// requests unread, which counts as CodeRetry. The app never sees these
// while a leadership changes hands: only past RouterConfig.RetryFor (5 s)
// do they become an *UnavailableError (errors.Is ErrUnavailable;
// Retriable), as is at once a slot without a leader (naming the slot) and
// a leader that cannot be reached. A request whose leader failed mid-call
// is not retried: a write may have been applied.
//
// # Slots and hash tags
//
// Keys map to 1,024 slots (statestore.NumSlots); a key with a hash tag
// ({user1}) hashes the tag only, as in Redis Cluster. A transaction runs
// on one slot's leader as one engine transaction, so all its keys must
// share a slot: otherwise Apply fails with a *CrossSlotError naming two
// keys and their slots and suggesting a hash tag (the API answers 400).
// With a single data member in the map (one node, or the runtimes of one
// host storing through its owner) every slot is that member's, and a
// transaction may span slots as on one engine: Apply then lists every
// slot it touches, and the member checks it leads them all. Bulk gets and sets are not atomic: they are split by
// slot, one request per slot, the slots in parallel, and may span slots.
//
// A scan whose prefix holds a whole hash tag reads that slot's leader
// only. Any other prefix fans out: the slots are grouped by leader, one
// request per leader listing its slots, in parallel, and the answers are
// merged in key order. Each leader returns at most limit keys after the
// key after, so the merge's first limit keys are the page, and the last
// key of a page is the cursor (after) of the next, valid whatever members
// answer it. DeleteChildren fans out the same way; as on one node, each
// slot's removal is atomic and the whole is not. Slots answered "moved"
// are grouped again on the newer map and asked once more.
package cluster
