// Package stream is mecha's stream engine: declarative jobs over broker
// topics with event-time windows, keyed state, joins and checkpoints. Its
// packages:
//   - stream/job: the StreamJob document (or a Spec built in Go), the
//     pipeline (decode, expr filter/map/key-by, windows or a windowed join
//     or pass-through, spread over parallel tasks by partition and key
//     hash), the runner over a Kafka-compatible cluster (per-partition
//     watermarks with idleness, sinks: topic, state store, app, pub/sub,
//     stdout, blackhole; dead-letter and late topics; checkpoints; topic
//     sinks without duplicates after a restart) and the control API;
//   - stream/window: tumbling, sliding and session windows, watermarks,
//     allowed lateness, a late side output (a state machine);
//   - stream/agg: count, sum, min, max, avg, top-N and exact
//     count-distinct on roaring bitmaps;
//   - stream/overload: health thresholds and the halve-then-raise rate
//     controller;
//   - stream/gen: the load generator behind `mecha stream gen`;
//   - stream/nexmark: the Nexmark generator and queries behind
//     `mecha stream bench nexmark`.
package stream
