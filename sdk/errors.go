package sdk

import (
	"context"
	"fmt"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Error is a runtime's answer to a failed call.
type Error struct {
	// Code is Dapr's error code (ERR_STATE_SAVE, ERR_INSTANCE_NOT_FOUND,
	// …), empty when the runtime gave none.
	Code string
	// Status is the gRPC code (an HTTP call's is mapped from its status).
	Status codes.Code
	// Message is the runtime's message.
	Message string
}

func (e *Error) Error() string {
	if e.Code == "" {
		return fmt.Sprintf("mecha: %v: %s", e.Status, e.Message)
	}
	return fmt.Sprintf("mecha: %s (%v): %s", e.Code, e.Status, e.Message)
}

// Unwrap makes a call cut by its context match context.Canceled and
// context.DeadlineExceeded.
func (e *Error) Unwrap() error {
	switch e.Status {
	case codes.Canceled:
		return context.Canceled
	case codes.DeadlineExceeded:
		return context.DeadlineExceeded
	}
	return nil
}

// Is matches the sentinel errors: a target's empty Code or OK Status
// matches any.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	if !ok {
		return false
	}
	return (t.Code == "" || t.Code == e.Code) && (t.Status == codes.OK || t.Status == e.Status) && t.Message == ""
}

// The errors a caller acts on, for errors.Is.
var (
	// ErrETagMismatch: a write's ETag (or first-write) did not match the
	// key's current version.
	ErrETagMismatch = &Error{Status: codes.Aborted}
	// ErrInstanceNotFound: the instance a call named is gone (its
	// runtime died, or no longer hosts the app).
	ErrInstanceNotFound = &Error{Code: "ERR_INSTANCE_NOT_FOUND"}
	// ErrNotFound: what the call named does not exist (a component, an
	// app, an instance).
	ErrNotFound = &Error{Status: codes.NotFound}
	// ErrUnavailable: no runtime could be reached, or the runtime could
	// not reach what serves the call (a Crux slot without a leader).
	ErrUnavailable = &Error{Status: codes.Unavailable}
)

// fromGRPC makes a gRPC call's error an *Error, keeping the context's
// own errors as they are.
func fromGRPC(err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	e := &Error{Status: st.Code(), Message: st.Message()}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetReason() != "" {
			e.Code = info.GetReason()
			break
		}
	}
	return e
}
