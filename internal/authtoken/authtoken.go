// Package authtoken compares credentials (the API token, the peer token)
// without leaking, through timing, how much of a guess was right or how
// long the secret is.
package authtoken

import (
	"crypto/sha256"
	"crypto/subtle"
)

// Equal reports whether got is want. Both are hashed first, so the
// comparison takes the same time whatever their lengths and contents.
func Equal(got, want []byte) bool {
	g, w := sha256.Sum256(got), sha256.Sum256(want)
	return subtle.ConstantTimeCompare(g[:], w[:]) == 1
}

// Allows reports whether a call carrying got passes when want is the
// configured token: always when none is configured.
func Allows(got []byte, want string) bool {
	return want == "" || Equal(got, []byte(want))
}
