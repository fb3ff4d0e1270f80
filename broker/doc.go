// Package broker will hold mecha's Kafka-compatible broker and its
// pubsub.mecha component. Until it lands, the embedded default pubsub is
// contrib's pubsub.in-memory.
package broker
