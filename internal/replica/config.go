package replica

import (
	"fmt"
	"time"
)

// Config tunes a Leader and a Follower. Durations are measured on the
// clock the caller passes in (now arguments), never read here.
type Config struct {
	// MaxLag is how long a follower may go without catching up to the
	// leader's log end and stay in sync (Kafka's replica.lag.time.max.ms).
	MaxLag time.Duration
	// MinISR is the smallest in-sync set (the leader counted) that may
	// acknowledge a strong write (min.insync.replicas).
	MinISR int
	// AckTimeout fails a strong write still uncommitted after it with
	// ErrTimeout; 0 waits as long as the leader lives.
	AckTimeout time.Duration
	// ProposalRetry is how long the leader waits for the control plane
	// to answer an ISR proposal before sending it again.
	ProposalRetry time.Duration
	// FetchMaxBytes is the record budget a follower asks for per fetch.
	FetchMaxBytes int
	// FetchTimeout is how long a follower waits for a fetch response
	// before it gives the request up and sends another.
	FetchTimeout time.Duration
	// RetryBackoff is how long a follower waits after an error response
	// before fetching again.
	RetryBackoff time.Duration
}

// DefaultConfig is Kafka's defaults where Kafka has one.
func DefaultConfig() Config {
	return Config{
		MaxLag:        30 * time.Second,
		MinISR:        1,
		AckTimeout:    30 * time.Second,
		ProposalRetry: time.Second,
		FetchMaxBytes: 1 << 20,
		FetchTimeout:  30 * time.Second,
		RetryBackoff:  100 * time.Millisecond,
	}
}

// Validate names the first bad field.
func (c Config) Validate() error {
	switch {
	case c.MaxLag <= 0:
		return fmt.Errorf("%w: MaxLag %v must be positive", ErrInvalid, c.MaxLag)
	case c.MinISR < 1:
		return fmt.Errorf("%w: MinISR %d must be at least 1", ErrInvalid, c.MinISR)
	case c.AckTimeout < 0:
		return fmt.Errorf("%w: AckTimeout %v must not be negative", ErrInvalid, c.AckTimeout)
	case c.ProposalRetry <= 0:
		return fmt.Errorf("%w: ProposalRetry %v must be positive", ErrInvalid, c.ProposalRetry)
	case c.FetchMaxBytes <= 0:
		return fmt.Errorf("%w: FetchMaxBytes %d must be positive", ErrInvalid, c.FetchMaxBytes)
	case c.FetchTimeout <= 0:
		return fmt.Errorf("%w: FetchTimeout %v must be positive", ErrInvalid, c.FetchTimeout)
	case c.RetryBackoff < 0:
		return fmt.Errorf("%w: RetryBackoff %v must not be negative", ErrInvalid, c.RetryBackoff)
	}
	return nil
}
