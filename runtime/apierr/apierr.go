// Package apierr is the table that maps building-block failures to Dapr's
// error codes, HTTP statuses and gRPC codes. Both API edges render these
// errors; nothing below the edge inspects them.
//
// Every code and status here is the one daprd 1.14.4 answers for the same
// situation (its pkg/messages, pkg/api/errors and pkg/api/{http,grpc}),
// except where a comment says "mecha only". The messages are mecha's own:
// they may say more than daprd's (the flag or field to change). Where
// daprd answers one situation differently on HTTP and gRPC, the HTTP and
// GRPC fields say so. docs/errors.md lists the whole table.
package apierr

import (
	"errors"
	"fmt"
	"net/http"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Error is an API failure with Dapr's error code.
type Error struct {
	// Code is Dapr's errorCode, e.g. ERR_STATE_STORE_NOT_FOUND.
	Code string
	// HTTP is the HTTP status.
	HTTP int
	// GRPC is the gRPC status code.
	GRPC codes.Code
	// Message is the human-readable message.
	Message string
	// Cause is the failure behind it, when there is one.
	Cause error
}

// Error implements error.
func (e *Error) Error() string { return e.Message }

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Cause }

// GRPCStatus lets grpc-go render the error as a status. The Dapr error
// code rides in an ErrorInfo detail (Reason, domain dapr.io), so that a
// gRPC client (mecha's SDK) gets the same code as an HTTP one.
func (e *Error) GRPCStatus() *status.Status {
	st := status.New(e.GRPC, e.Message)
	if d, err := st.WithDetails(&errdetails.ErrorInfo{Reason: e.Code, Domain: ErrorDomain}); err == nil {
		return d
	}
	return st
}

// ErrorDomain is the ErrorInfo domain of the runtime's gRPC errors.
const ErrorDomain = "dapr.io"

// As returns err as an *Error, wrapping anything else as ERR_INTERNAL.
func As(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return &Error{Code: "ERR_INTERNAL", HTTP: http.StatusInternalServerError, GRPC: codes.Internal, Message: err.Error()}
}

func mk(code string, httpStatus int, grpcCode codes.Code, format string, args ...any) *Error {
	return &Error{Code: code, HTTP: httpStatus, GRPC: grpcCode, Message: fmt.Sprintf(format, args...)}
}

// Malformed reports a request body or field that could not be decoded, or
// a state key with the "||" separator (daprd's ERR_MALFORMED_REQUEST).
func Malformed(format string, args ...any) *Error {
	return mk("ERR_MALFORMED_REQUEST", http.StatusBadRequest, codes.InvalidArgument, format, args...)
}

// BadRequest reports an invalid request.
func BadRequest(format string, args ...any) *Error {
	return mk("ERR_BAD_REQUEST", http.StatusBadRequest, codes.InvalidArgument, "invalid request: "+format, args...)
}

// BodyTooLarge reports a body over --dapr-http-max-request-size. Mecha
// only: daprd cuts the body short and answers 400 (or fails the
// invocation with ERR_DIRECT_INVOKE); gRPC's own limit answers
// ResourceExhausted in both.
func BodyTooLarge(limit int) *Error {
	return mk("ERR_BODY_TOO_LARGE", http.StatusRequestEntityTooLarge, codes.ResourceExhausted,
		"request body exceeds the limit of %d bytes (--dapr-http-max-request-size)", limit)
}

// Unimplemented reports a Dapr API mecha does not serve (actors,
// configuration, locks, workflows, crypto, jobs, state query). daprd
// serves them; its code for an API it does not implement is this one.
func Unimplemented(what string) *Error {
	return mk("ERR_API_UNIMPLEMENTED", http.StatusNotImplemented, codes.Unimplemented, "this API is currently not implemented: %s", what)
}

// NoRoute reports an HTTP request that matches no API and names no app to
// invoke. daprd sends every such request to service invocation, which
// finds no app id: 404 ERR_DIRECT_INVOKE. Empty names in a path
// (/v1.0/state/, /v1.0/publish/pubsub/) land here too, as in daprd,
// whose router matches no route for them.
func NoRoute(method, path, why string) *Error {
	e := DirectInvokeNoAppID()
	if why != "" {
		why = " (" + why + ")"
	}
	e.Message = fmt.Sprintf("no Dapr API at %s %s%s, and no app to invoke: %s", method, path, why, e.Message)
	return e
}

// State errors.

// StateStoresNotConfigured: no state store is loaded at all.
func StateStoresNotConfigured(name string) *Error {
	return mk("ERR_STATE_STORE_NOT_CONFIGURED", http.StatusInternalServerError, codes.FailedPrecondition,
		"state store %s is not configured: no state store is loaded", name)
}

// StateStoreNotFound: the named store is not loaded.
func StateStoreNotFound(name string) *Error {
	return mk("ERR_STATE_STORE_NOT_FOUND", http.StatusBadRequest, codes.InvalidArgument, "state store %s is not found", name)
}

// StateGet wraps a store's Get failure, whatever it is (daprd does not
// single out ETag errors on reads).
func StateGet(key, store string, err error) *Error {
	return mk("ERR_STATE_GET", http.StatusInternalServerError, codes.Internal, "fail to get %s from state store %s: %v", key, store, err).causedBy(err)
}

// StateSave wraps a store's Set failure. The caller turns ETag errors
// into 409 / Aborted and 400 / InvalidArgument.
func StateSave(store string, err error) *Error {
	return mk("ERR_STATE_SAVE", http.StatusInternalServerError, codes.Internal, "failed saving state in state store %s: %v", store, err).causedBy(err)
}

// StateDelete wraps a store's Delete failure; ETag errors as StateSave.
func StateDelete(key string, err error) *Error {
	return mk("ERR_STATE_DELETE", http.StatusInternalServerError, codes.Internal, "failed deleting state with key %s: %v", key, err).causedBy(err)
}

// StateDeleteBulk wraps a store's BulkDelete failure (gRPC only; daprd
// has no HTTP bulk delete); ETag errors as StateSave.
func StateDeleteBulk(store string, err error) *Error {
	return mk("ERR_STATE_DELETE", http.StatusInternalServerError, codes.Internal, "failed deleting state in state store %s: %v", store, err)
}

// StateBulkGet wraps a store's BulkGet failure. daprd's gRPC API returns
// the store's error as it is, which gRPC sends as Unknown.
func StateBulkGet(store string, err error) *Error {
	return mk("ERR_STATE_BULK_GET", http.StatusInternalServerError, codes.Unknown, "failed getting state in bulk from state store %s: %v", store, err).causedBy(err)
}

// StateTransaction wraps a failed transaction, whatever the store said
// (daprd does not single out ETag errors here either).
func StateTransaction(err error) *Error {
	return mk("ERR_STATE_TRANSACTION", http.StatusInternalServerError, codes.Internal, "error while executing state transaction: %v", err).causedBy(err)
}

// StateNotTransactional: the store cannot run transactions.
func StateNotTransactional(store string) *Error {
	return mk("ERR_STATE_STORE_NOT_SUPPORTED", http.StatusInternalServerError, codes.Unimplemented, "state store %s doesn't support transactions", store)
}

// StateScanNotSupported: the store cannot list keys by prefix. Mecha only
// (the scan extension); it answers as daprd does for a store that cannot
// run queries.
func StateScanNotSupported(store string) *Error {
	return mk("ERR_STATE_STORE_NOT_SUPPORTED", http.StatusInternalServerError, codes.Internal,
		"state store %s does not support scanning keys by prefix", store)
}

// StateOperationNotSupported: a transaction holds an operation other than
// "upsert" or "delete" (compared as written, as daprd does). daprd
// answers 400 over HTTP and Unimplemented over gRPC.
func StateOperationNotSupported(i int, op string) *Error {
	return mk("ERR_NOT_SUPPORTED_STATE_OPERATION", http.StatusBadRequest, codes.Unimplemented,
		"operation type %s not supported (operations[%d]: use \"upsert\" or \"delete\")", op, i)
}

// StateTooManyTransactions: more operations than the store allows.
func StateTooManyTransactions(store string, n, max int) *Error {
	return mk("ERR_STATE_STORE_TOO_MANY_TRANSACTIONS", http.StatusBadRequest, codes.InvalidArgument,
		"the transaction contains %d operations, which is more than what the state store %s supports: %d", n, store, max)
}

// Pub/sub errors. daprd 1.14 never answers ERR_PUBSUB_NOT_CONFIGURED in a
// running sidecar (its publisher always exists): with no pubsub loaded,
// every name is ERR_PUBSUB_NOT_FOUND.

// PubSubEmpty: the pubsub name is missing (gRPC; over HTTP the path
// matches no route).
func PubSubEmpty() *Error {
	return mk("ERR_PUBSUB_EMPTY", http.StatusNotFound, codes.InvalidArgument, "pubsub name is empty")
}

// TopicEmpty: the topic is missing (gRPC; over HTTP the path matches no
// route).
func TopicEmpty(pubsub string) *Error {
	return mk("ERR_TOPIC_NAME_EMPTY", http.StatusNotFound, codes.InvalidArgument, "topic is empty in pubsub %s", pubsub)
}

// PubSubNotFound: the named pubsub is not loaded.
func PubSubNotFound(name string) *Error {
	return mk("ERR_PUBSUB_NOT_FOUND", http.StatusNotFound, codes.InvalidArgument, "pubsub %s is not found", name)
}

// PublishFailed wraps a component's Publish failure, and a bulk publish
// with failed entries.
func PublishFailed(topic, pubsub string, err error) *Error {
	return mk("ERR_PUBSUB_PUBLISH_MESSAGE", http.StatusInternalServerError, codes.Internal,
		"error when publishing to topic %s in pubsub %s: %v", topic, pubsub, err).causedBy(err)
}

// causedBy keeps err as the cause, and, mecha only, answers for what the
// error says of itself (otherwise the 500 daprd answers): an event
// refused for its size (MessageTooLarge) is a 413 naming the limit; a
// request the component will never take (BadRequest: a topic name, a Crux
// transaction whose keys are in different slots) a 400; a
// Crux slot whose leader cannot be reached (Retriable) a 503.
func (e *Error) causedBy(err error) *Error {
	var tl interface{ MessageTooLarge() bool }
	var br interface{ BadRequest() bool }
	var rt interface{ Retriable() bool }
	switch {
	case errors.As(err, &tl) && tl.MessageTooLarge():
		e.HTTP, e.GRPC = http.StatusRequestEntityTooLarge, codes.ResourceExhausted
	case errors.As(err, &br) && br.BadRequest():
		e.HTTP, e.GRPC = http.StatusBadRequest, codes.InvalidArgument
	case errors.As(err, &rt) && rt.Retriable():
		e.HTTP, e.GRPC = http.StatusServiceUnavailable, codes.Unavailable
	}
	e.Cause = err
	return e
}

// CloudEventsSer: the event could not be put in a CloudEvent.
func CloudEventsSer(topic, pubsub string, err error) *Error {
	return mk("ERR_PUBSUB_CLOUD_EVENTS_SER", http.StatusInternalServerError, codes.InvalidArgument,
		"error when marshalling cloud event envelope for topic %s pubsub %s: %v", topic, pubsub, err)
}

// PublishEventsSer: a bulk publish body or entry is malformed.
func PublishEventsSer(format string, args ...any) *Error {
	return mk("ERR_PUBSUB_EVENTS_SER", http.StatusBadRequest, codes.InvalidArgument, format, args...)
}

// PubSubMetadata: bad metadata on a publish (rawPayload that is not a
// boolean; mecha also refuses a ttlInSeconds that is not a positive
// number, which daprd leaves to the component).
func PubSubMetadata(err error) *Error {
	return mk("ERR_PUBSUB_REQUEST_METADATA", http.StatusBadRequest, codes.InvalidArgument, "failed deserializing metadata: %v", err)
}

// Binding errors: daprd answers every output binding failure, the
// binding's own or not finding it, with ERR_INVOKE_OUTPUT_BINDING.

// BindingNotFound: no output binding of that name.
func BindingNotFound(name string) *Error {
	return mk("ERR_INVOKE_OUTPUT_BINDING", http.StatusInternalServerError, codes.Internal,
		"error invoking output binding %s: couldn't find output binding %s", name, name)
}

// BindingInvoke wraps an output binding failure.
func BindingInvoke(name string, err error) *Error {
	return mk("ERR_INVOKE_OUTPUT_BINDING", http.StatusInternalServerError, codes.Internal, "error invoking output binding %s: %v", name, err)
}

// Secret errors.

// SecretStoresNotConfigured: no secret store is loaded.
func SecretStoresNotConfigured() *Error {
	return mk("ERR_SECRET_STORES_NOT_CONFIGURED", http.StatusInternalServerError, codes.FailedPrecondition, "secret store is not configured")
}

// SecretStoreNotFound: the named secret store is not loaded. The 401 is
// daprd's.
func SecretStoreNotFound(name string) *Error {
	return mk("ERR_SECRET_STORE_NOT_FOUND", http.StatusUnauthorized, codes.InvalidArgument, "failed finding secret store with key %s", name)
}

// SecretGet wraps a secret store failure.
func SecretGet(key, store string, err error) *Error {
	return mk("ERR_SECRET_GET", http.StatusInternalServerError, codes.Internal, "failed getting secret with key %s from secret store %s: %v", key, store, err)
}

// BulkSecretGet wraps a bulk secret failure.
func BulkSecretGet(store string, err error) *Error {
	return mk("ERR_SECRET_GET", http.StatusInternalServerError, codes.Internal, "failed getting secrets from secret store %s: %v", store, err)
}

// Invocation errors.

// DirectInvoke wraps a failed service invocation.
func DirectInvoke(appID string, err error) *Error {
	e := mk("ERR_DIRECT_INVOKE", http.StatusInternalServerError, codes.Internal, "failed to invoke, id: %s, err: %v", appID, err)
	e.Cause = err
	return e
}

// DirectInvokeNoAppID: neither the path nor dapr-app-id named the target.
// daprd answers 404 over HTTP; over gRPC an empty id fails the
// invocation: Internal.
func DirectInvokeNoAppID() *Error {
	return mk("ERR_DIRECT_INVOKE", http.StatusNotFound, codes.Internal, "failed getting app id either from the URL path or the header dapr-app-id")
}

// InstanceNotFound (mecha only): the call named one instance of the app
// (mecha-instance-id) and no runtime hosts the app as that instance any
// more. It is distinct from a failed invocation so that an app holding
// a stale instance id (a session pointing at a gateway that died) can
// drop it and act.
func InstanceNotFound(appID, instance string, err error) *Error {
	e := mk("ERR_INSTANCE_NOT_FOUND", http.StatusNotFound, codes.NotFound, "failed to invoke, id: %s, instance: %s: %v", appID, instance, err)
	e.Cause = err
	return e
}

// AppChannelNotFound: the runtime has no app to call.
func AppChannelNotFound() *Error {
	return mk("ERR_DIRECT_INVOKE", http.StatusInternalServerError, codes.Internal, "app channel is not initialized")
}

// Denied: an access control policy (or the internal port's peer token)
// refused the call. daprd answers it as a failed invocation whose status
// is 403: the code stays ERR_DIRECT_INVOKE.
func Denied(appID string, err error) *Error {
	return mk("ERR_DIRECT_INVOKE", http.StatusForbidden, codes.PermissionDenied,
		"failed to invoke, id: %s, err: access control policy has denied access: %v", appID, err)
}

// Health errors (HTTP only).

// HealthNotReady: the runtime is not ready.
func HealthNotReady() *Error {
	return mk("ERR_HEALTH_NOT_READY", http.StatusInternalServerError, codes.Internal, "dapr is not ready")
}

// OutboundNotReady: the outbound API is not ready.
func OutboundNotReady() *Error {
	return mk("ERR_OUTBOUND_HEALTH_NOT_READY", http.StatusInternalServerError, codes.Internal, "dapr outbound is not ready")
}

// HealthAppIDNotMatch: /v1.0/healthz?appid= names another app.
func HealthAppIDNotMatch(asked, served string) *Error {
	return mk("ERR_HEALTH_APPID_NOT_MATCH", http.StatusInternalServerError, codes.Internal,
		"dapr app-id does not match: asked for %q, this runtime serves %q", asked, served)
}

// Unauthenticated: the API token is missing or wrong. The status and the
// gRPC code are daprd's; daprd's HTTP body is the text "invalid api
// token", without an errorCode: ERR_API_TOKEN is mecha's.
func Unauthenticated() *Error {
	return mk("ERR_API_TOKEN", http.StatusUnauthorized, codes.Unauthenticated, "authentication error: api token mismatch (send DAPR_API_TOKEN in the dapr-api-token header)")
}
