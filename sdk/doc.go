// Package sdk is mecha's Go SDK: a thin client of the runtime on the
// app's host, for state (ETags, TTLs, transactions, bulk calls, the key
// scan, consistency), publish and the streaming subscription, service
// invocation (to any instance of an app, or to one named instance),
// output bindings and metadata.
//
// It speaks the Dapr gRPC API (dapr.proto.runtime.v1.Dapr) and mecha's
// extensions of it: the key scan is QueryStateAlpha1 with the query
// {"prefix": …}, and a call to one instance carries mecha-instance-id.
// Any Dapr-compatible runtime serves what Dapr has.
//
// # Connecting
//
// New reads what a runtime gives the app it starts: DAPR_GRPC_PORT (the
// runtime's gRPC API on 127.0.0.1), DAPR_API_TOKEN, APP_ID, and
// MECHA_CATALOG (the catalog the runtime caches on disk). Options
// override them.
//
// # Fallback
//
// While the app's own runtime is unreachable (it restarts, or is being
// upgraded), a call goes to another runtime of the DC instead, one the
// catalog file lists, so that it does not fail. The SDK falls back only
// when the local runtime cannot be reached at all (its connection is
// down), never on an answer: an error the runtime gave is the caller's.
// It goes only to a runtime that hosts the same app-id and no other, so
// that the call acts as the same app (its state keys, its caller id, its
// subscriptions); without an app-id (APP_ID, WithAppID) there is no
// fallback. State and pub/sub reach the same data only when the runtimes
// share a Crux cluster and a broker. The other runtime's API must listen where this host reaches it
// (--dapr-listen-addresses, with an API token). A call that the local
// runtime took and then died on (Unavailable on a connection that was
// up) is sent to another runtime too, so, as with any retry, it may be
// applied twice: make writes idempotent (ETags, keys) where it matters.
//
// # Errors
//
// A runtime's error is an *Error carrying Dapr's error code (Code, as
// ERR_STATE_SAVE), the gRPC code and the message; errors.Is matches it
// against ErrETagMismatch, ErrInstanceNotFound and ErrNotFound. Every call
// honours its context's deadline and cancellation.
package sdk
