// Package stream will hold mecha's stream engine: declarative jobs over
// broker topics with windows, keyed state and checkpoints (issue 5). What
// exists so far:
//   - stream/window: event-time tumbling, sliding and session windows,
//     watermarks, allowed lateness, a late side output (a state machine);
//   - stream/agg: count, sum, min, max, avg, top-N and exact
//     count-distinct on roaring bitmaps;
//   - stream/job: the StreamJob document and a runner (topic source read
//     by partition, expr filter/map/key-by, per-partition watermarks with
//     idleness, one windowed aggregate, topic, state-store or stdout sink,
//     dead-letter and late topics, periodic checkpoints of offsets and
//     window state to the data dir), started by `mecha run` for each job
//     in --resources-path.
package stream
