// Package stream will hold mecha's stream engine: declarative jobs over
// broker topics with windows, keyed state and checkpoints.
package stream
