package replica

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name   string
		change func(*Config)
		ok     bool
	}{
		{"defaults", func(*Config) {}, true},
		{"no ack timeout", func(c *Config) { c.AckTimeout = 0 }, true},
		{"no backoff", func(c *Config) { c.RetryBackoff = 0 }, true},
		{"MaxLag 0", func(c *Config) { c.MaxLag = 0 }, false},
		{"MinISR 0", func(c *Config) { c.MinISR = 0 }, false},
		{"negative ack timeout", func(c *Config) { c.AckTimeout = -time.Second }, false},
		{"ProposalRetry 0", func(c *Config) { c.ProposalRetry = 0 }, false},
		{"FetchMaxBytes 0", func(c *Config) { c.FetchMaxBytes = 0 }, false},
		{"FetchTimeout 0", func(c *Config) { c.FetchTimeout = 0 }, false},
		{"negative backoff", func(c *Config) { c.RetryBackoff = -1 }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			tt.change(&c)
			err := c.Validate()
			if (err == nil) != tt.ok || (err != nil && !errors.Is(err, ErrInvalid)) {
				t.Fatalf("Validate() = %v", err)
			}
			if _, ferr := NewFollower(NewMemLog(), c, 1, 0); (ferr == nil) != tt.ok {
				t.Fatalf("NewFollower: %v", ferr)
			}
		})
	}
}

// Every code stands for one sentinel and back, so a follower sees the
// errors a local call gives.
func TestCodes(t *testing.T) {
	for c := CodeOK; c < codeCount; c++ {
		err := c.Err()
		if got := CodeOf(err); got != c {
			t.Fatalf("code %d: Err %v maps back to %d", c, err, got)
		}
		if got := CodeOf(fmt.Errorf("wrapped: %w", err)); err != nil && got != c {
			t.Fatalf("code %d wrapped maps to %d", c, got)
		}
	}
	if !errors.Is(codeCount.Err(), ErrMalformed) {
		t.Fatal("an unknown code is not malformed")
	}
	if CodeOf(errors.New("disk on fire")) != CodeNotLeader {
		t.Fatal("a foreign error does not ask the follower to look again")
	}
}

func TestEventStrings(t *testing.T) {
	for _, e := range []Event{
		{Kind: EventAcked, Offset: 1, End: 2},
		{Kind: EventWriteFailed, Offset: 1, End: 2, Err: ErrTimeout},
		{Kind: EventHighWatermark, Offset: 3},
		{Kind: EventISRProposal, Epoch: 2, Version: 4, ISR: []ReplicaID{1, 2}},
		{Kind: EventFenced, Epoch: 3},
		{Kind: EventTruncated, Offset: 4},
		{Kind: EventReset, Offset: 5},
		{Kind: 99},
	} {
		if e.String() == "" || e.Kind.String() == "" {
			t.Fatalf("%#v has no text", e)
		}
	}
}
