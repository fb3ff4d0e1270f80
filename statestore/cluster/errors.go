package cluster

import (
	"errors"
	"fmt"
	"strings"

	"mecha/statestore"
)

// Error codes: the status byte of a failed answer. The first ones carry
// the engine's errors across, so that the caller gets the same sentinel
// (errors.Is) and message the engine gave, and the component maps them
// to the same Dapr errors as on a single node.
const (
	CodeETagMismatch byte = iota + 1 // statestore.ErrETagMismatch
	CodeETagInvalid                  // statestore.ErrETagInvalid
	CodeBadTTL                       // statestore.ErrBadTTL
	CodeValueTooBig                  // statestore.ErrValueTooBig
	CodeKeyEmpty                     // statestore.ErrKeyEmpty
	CodeKeyTooLong                   // statestore.ErrKeyTooLong
	CodeBadRequest                   // another error of the request (InvalidInput), or a malformed message
	CodeNoSpace                      // statestore.ErrNoSpace
	CodeClosed                       // statestore.ErrClosed
	CodeFailed                       // statestore.ErrFailed
	CodeMoved                        // this member does not lead the slot: Slot, Epoch, Leader
	CodeUnavailable                  // the slot cannot be served now (no leader, the map is behind); retriable
	CodeInternal                     // anything else
	CodeRetry                        // nothing of the request was written (refused before it was logged, or lost for certain with a deposed leader's tail): send it again
	codeMax          = CodeRetry
)

// ErrBadRequest is the sentinel of CodeBadRequest: an input error the
// engine reported without a sentinel of its own (InvalidInput is true).
var ErrBadRequest error = inputError("bad request")

// ErrUnavailable is wrapped by UnavailableError: the slot has no leader
// the router can reach now, or a retry after "moved" failed again. The
// caller may retry.
var ErrUnavailable = errors.New("crux cluster: slot unavailable")

// ErrNotWritten is the sentinel of CodeRetry: nothing of the request was
// written, and it may be sent again. It is an ErrUnavailable.
var ErrNotWritten = fmt.Errorf("%w: nothing of the request was written", ErrUnavailable)

// ErrRemote is the sentinel of CodeInternal: another member failed the
// request for a reason of its own.
var ErrRemote = errors.New("crux cluster: remote failure")

type inputError string

func (e inputError) Error() string      { return string(e) }
func (e inputError) InvalidInput() bool { return true }

var sentinels = map[byte]error{
	CodeETagMismatch: statestore.ErrETagMismatch,
	CodeETagInvalid:  statestore.ErrETagInvalid,
	CodeBadTTL:       statestore.ErrBadTTL,
	CodeValueTooBig:  statestore.ErrValueTooBig,
	CodeKeyEmpty:     statestore.ErrKeyEmpty,
	CodeKeyTooLong:   statestore.ErrKeyTooLong,
	CodeBadRequest:   ErrBadRequest,
	CodeNoSpace:      statestore.ErrNoSpace,
	CodeClosed:       statestore.ErrClosed,
	CodeFailed:       statestore.ErrFailed,
	CodeUnavailable:  ErrUnavailable,
	CodeInternal:     ErrRemote,
	CodeRetry:        ErrNotWritten,
}

// Error is a failed answer on the wire, and the error a caller gets for
// it: its message is the remote one and it unwraps to the code's
// sentinel (statestore.ErrETagMismatch, …).
type Error struct {
	Code byte
	Msg  string
	// Slot, Epoch and Leader are CodeMoved's: the slot's leader and its
	// epoch in the answering member's map ("" when leaderless).
	Slot   int
	Epoch  uint64
	Leader string
}

func (e *Error) Error() string {
	if e.Code == CodeMoved {
		return fmt.Sprintf("crux cluster: slot %d moved to %q at epoch %d", e.Slot, e.Leader, e.Epoch)
	}
	return e.Msg
}

// Unwrap returns the code's sentinel.
func (e *Error) Unwrap() error { return sentinels[e.Code] }

// Retriable reports that a retry may succeed: the slot's leadership is
// changing hands (moved, CodeRetry) or cannot serve now.
func (e *Error) Retriable() bool {
	return e.Code == CodeMoved || e.Code == CodeRetry || e.Code == CodeUnavailable
}

// toError turns an engine's (or the server's) error into its wire form.
func toError(err error) *Error {
	var un *UnavailableError
	if errors.As(err, &un) {
		return &Error{Code: CodeUnavailable, Msg: err.Error()}
	}
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	for _, c := range []byte{CodeETagMismatch, CodeETagInvalid, CodeBadTTL, CodeValueTooBig, CodeKeyEmpty, CodeKeyTooLong, CodeNoSpace, CodeClosed, CodeFailed, CodeRetry, CodeUnavailable} {
		if errors.Is(err, sentinels[c]) {
			return &Error{Code: c, Msg: err.Error()}
		}
	}
	var in interface{ InvalidInput() bool }
	if errors.As(err, &in) && in.InvalidInput() || errors.Is(err, ErrMalformed) {
		return &Error{Code: CodeBadRequest, Msg: err.Error()}
	}
	return &Error{Code: CodeInternal, Msg: err.Error()}
}

// UnavailableError says a slot cannot be served now: it has no leader,
// or its leader answered "moved" again after the router refreshed its
// map. It wraps ErrUnavailable; the caller may retry.
type UnavailableError struct {
	Slot   int
	Reason string
	// Err is the failure behind it, if any (the transport's, the last
	// "moved").
	Err error
}

func (e *UnavailableError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("crux cluster: slot %d is unavailable: %s: %v", e.Slot, e.Reason, e.Err)
	}
	return fmt.Sprintf("crux cluster: slot %d is unavailable: %s", e.Slot, e.Reason)
}

// Unwrap returns ErrUnavailable and Err.
func (e *UnavailableError) Unwrap() []error {
	if e.Err == nil {
		return []error{ErrUnavailable}
	}
	return []error{ErrUnavailable, e.Err}
}

// Retriable reports that a retry may succeed.
func (e *UnavailableError) Retriable() bool { return true }

// CrossSlotError refuses a transaction whose keys are in different
// slots: as in Redis Cluster, a transaction runs on one slot's leader,
// so its keys must share a slot, which a hash tag makes them do.
// InvalidInput and BadRequest are true: the API answers 400.
type CrossSlotError struct {
	// Keys and Slots are the first key, and the first key in another
	// slot, with their slots.
	Keys  [2]string
	Slots [2]int
}

func (e *CrossSlotError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "keys %q (slot %d) and %q (slot %d) are in different slots; a transaction's keys must share one: use a hash tag, such as %s and %s",
		e.Keys[0], e.Slots[0], e.Keys[1], e.Slots[1], tagged("user1", e.Keys[0]), tagged("user1", e.Keys[1]))
	return b.String()
}

// tagged suggests key with a hash tag: the key with tag inserted after
// its last "||" (the app-id prefix mecha adds) or in front.
func tagged(tag, key string) string {
	if i := strings.LastIndex(key, "||"); i >= 0 {
		return key[:i+2] + "{" + tag + "}" + key[i+2:]
	}
	return "{" + tag + "}" + key
}

// InvalidInput marks the error as the request's.
func (e *CrossSlotError) InvalidInput() bool { return true }

// BadRequest tells the API to answer 400 naming the keys and slots where
// a store's errors are otherwise a 500 (as in daprd).
func (e *CrossSlotError) BadRequest() bool { return true }
