// Package statestore will hold Crux, mecha's sharded and replicated session
// store, and its state.crux component. Until it lands, the embedded default
// state store is contrib's state.in-memory.
package statestore
