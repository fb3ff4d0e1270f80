package apierr

import (
	"errors"
	"fmt"
	"net/http"
	"testing"

	"google.golang.org/grpc/codes"

	"mecha/statestore/cluster"
)

type tooLarge struct{}

func (tooLarge) Error() string         { return "too large" }
func (tooLarge) MessageTooLarge() bool { return true }

// A cause that says what it is changes the status; any other keeps
// daprd's 500.
func TestCausedBy(t *testing.T) {
	for _, c := range []struct {
		name string
		e    *Error
		http int
		grpc codes.Code
	}{
		{"plain", StateSave("s", errors.New("disk")), http.StatusInternalServerError, codes.Internal},
		{"cross slot", StateTransaction(fmt.Errorf("apply: %w", &cluster.CrossSlotError{Keys: [2]string{"a", "b"}, Slots: [2]int{1, 2}})), http.StatusBadRequest, codes.InvalidArgument},
		{"unavailable", StateGet("k", "s", &cluster.UnavailableError{Slot: 3, Reason: "no leader"}), http.StatusServiceUnavailable, codes.Unavailable},
		{"too large", PublishFailed("t", "p", tooLarge{}), http.StatusRequestEntityTooLarge, codes.ResourceExhausted},
	} {
		if c.e.HTTP != c.http || c.e.GRPC != c.grpc {
			t.Errorf("%s: %d %v, want %d %v", c.name, c.e.HTTP, c.e.GRPC, c.http, c.grpc)
		}
		if c.e.Cause == nil {
			t.Errorf("%s: the cause is dropped", c.name)
		}
	}
}
