// Package pattern makes the deterministic bytes the test app streams and
// the e2e tests check: byte i is i*7+seed (mod 256).
package pattern

import "io"

// New returns an endless reader of the pattern that starts at seed.
func New(seed byte) io.Reader { return &reader{next: seed} }

type reader struct{ next byte }

func (p *reader) Read(b []byte) (int, error) {
	for i := range b {
		b[i] = p.next
		p.next += 7
	}
	return len(b), nil
}
