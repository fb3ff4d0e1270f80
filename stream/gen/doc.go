// Package gen is the stream engine's load generator: it writes synthetic
// records to a broker topic at a target rate, in three modes.
//
//   - Template (ModeTemplate): records from a JSON template whose fields
//     vary by distribution (ParseTemplate, then Template.NewGenerator).
//   - Replay (ModeReplay), time compression: every record of a source
//     topic, up to its end offsets when the run started, written again
//     with the gaps between record timestamps divided by a speedup.
//   - Doubling (ModeDouble): every record of a source topic written N
//     times, optionally with a top-level field made distinct per copy.
//
// Run drives all three; `mecha stream gen` wraps it.
//
// # Templates
//
// A template is a JSON object. A value that is an object with a "dist"
// key is a generator; any other value is a constant, written as it is;
// objects without "dist" and arrays are walked into, so generators may
// sit at any depth. Fields keep the template's order. The generators:
//
//	{"dist":"sequence","start":0}                  0, 1, 2, … from start (default 0)
//	{"dist":"uniform","min":1,"max":6}             an integer in [min, max]
//	{"dist":"normal","mean":50,"stddev":10,"decimals":2}
//	                                               a float; decimals (0–15) rounds it, default shortest
//	{"dist":"zipf","s":1.2,"v":1,"max":1000000}    an integer in [1, max], k weighted (v+k−1)^−s: 1 is
//	                                               the hottest key; s > 1, v ≥ 1 (default 1)
//	{"dist":"choice","values":["a","b"],"weights":[9,1]}
//	                                               one of values (any JSON), uniformly or by weight
//	{"dist":"string","prefix":"user-","suffix":"","of":{"dist":"zipf","s":1.1,"max":1000000}}
//	                                               a string: prefix, an integer drawn from of
//	                                               (sequence, uniform or zipf), suffix
//	{"dist":"now","jitter":0}                      the wall clock in ms when the record is made (its
//	                                               event time), minus a uniform [0, jitter] ms
//	                                               to make events arrive out of order
//	{"dist":"bool","p":0.5}                        true with probability p (default 0.5)
//
// ParseTemplate validates the whole template before anything is written;
// an error names the JSON path of the bad field, as in
// "template: $.device.id: uniform: min 10 > max 5". Unknown parameters
// are errors too, so a typo does not silently fall back to a default.
//
// A template compiles to literal byte chunks between generator slots, so
// making a record is a few appends into a reused buffer: no reflection
// and no encoding/json per record. A Generator is seeded: the same seed
// gives the same records, except for "now" fields.
package gen
