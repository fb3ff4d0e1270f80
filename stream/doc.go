// Package stream will hold mecha's stream engine: declarative jobs over
// broker topics with windows, keyed state and checkpoints (issue 5). What
// exists so far are its two deciding cores, both plain state machines:
// stream/window (event-time tumbling, sliding and session windows,
// watermarks, allowed lateness, late side output) and stream/agg (count,
// sum, min, max, avg, top-N and exact count-distinct on roaring bitmaps).
package stream
