// SASL authentication: SaslHandshake (key 17, v0–v1) and SaslAuthenticate
// (key 36, v0–v2), with the mechanisms PLAIN, SCRAM-SHA-256 and
// SCRAM-SHA-512 (RFC 5802: the stored keys are github.com/xdg-go/scram's;
// the exchange is written here because Kafka's server, unlike xdg-go's,
// takes a client-final nonce that ends with the server's nonce, which is
// what librdkafka sends).
//
// With users configured (Config.SASLUsers), a connection may send only
// ApiVersions, SaslHandshake and SaslAuthenticate until it has
// authenticated; any other request closes it, as Kafka's SASL listener
// does. A failed authentication is answered SASL_AUTHENTICATION_FAILED
// (58) and the connection closes. Without users, SaslHandshake is answered
// UNSUPPORTED_SASL_MECHANISM (33) with no mechanism, and SaslAuthenticate
// ILLEGAL_SASL_STATE (34).
//
// SaslHandshake v0 is answered as v1 is (librdkafka looks for v0 in
// ApiVersions before it uses SASL at all), but the raw SASL tokens that
// followed a v0 handshake in Kafka before SaslAuthenticate existed are
// not served: every client in use sends SaslAuthenticate when the broker
// lists it.
package broker

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/xdg-go/scram"

	"mecha/internal/authtoken"
)

// SASL mechanisms served.
const (
	mechPlain     = "PLAIN"
	mechScram256  = "SCRAM-SHA-256"
	mechScram512  = "SCRAM-SHA-512"
	scramIters    = 4096 // Kafka's default iteration count
	maxSASLTokens = 4    // SCRAM takes two; more is a client looping
)

var saslMechanisms = []string{mechPlain, mechScram256, mechScram512}

// LoadSASLUsers reads a users file: one "name:password" a line; blank
// lines and lines starting with # are skipped. It names the line of the
// first error.
func LoadSASLUsers(path string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("SASL users: %w", err)
	}
	users := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, pass, ok := strings.Cut(line, ":")
		switch {
		case !ok:
			return nil, fmt.Errorf("SASL users %s line %d: want name:password", path, n)
		case name == "" || pass == "":
			return nil, fmt.Errorf("SASL users %s line %d: empty name or password", path, n)
		case strings.ContainsAny(name, ",="):
			return nil, fmt.Errorf("SASL users %s line %d: user %q: a name may not hold ',' or '='", path, n, name)
		}
		if _, dup := users[name]; dup {
			return nil, fmt.Errorf("SASL users %s line %d: user %q twice", path, n, name)
		}
		users[name] = pass
	}
	if len(users) == 0 {
		return nil, fmt.Errorf("SASL users %s: no user", path)
	}
	return users, nil
}

// saslAuth checks credentials for every connection of a broker.
type saslAuth struct {
	users  map[string]string
	scrams map[string]*scramStore // by mechanism
}

// scramStore is one SCRAM mechanism's stored keys, by user.
type scramStore struct {
	hash  func() hash.Hash
	creds map[string]scram.StoredCredentials
}

func newSASLAuth(users map[string]string) (*saslAuth, error) {
	a := &saslAuth{users: users, scrams: map[string]*scramStore{}}
	for mech, h := range map[string]scram.HashGeneratorFcn{mechScram256: scram.SHA256, mechScram512: scram.SHA512} {
		st := &scramStore{hash: h, creds: map[string]scram.StoredCredentials{}}
		for name, pass := range users {
			salt := make([]byte, 16)
			_, _ = rand.Read(salt)
			cl, err := h.NewClient(name, pass, "")
			if err != nil {
				return nil, fmt.Errorf("SASL user %q: %w", name, err)
			}
			st.creds[name] = cl.GetStoredCredentials(scram.KeyFactors{Salt: string(salt), Iters: scramIters})
		}
		a.scrams[mech] = st
	}
	return a, nil
}

// scramConv is the server's side of one SCRAM exchange (RFC 5802): the
// client-first message, answered with the server-first; the
// client-final, answered with the server-final once its proof checks.
type scramConv struct {
	store *scramStore
	gs2   string // the client-first's GS2 header, "n,," or "y,,"
	bare  string // client-first-message-bare
	first string // server-first-message
	nonce string // the client's nonce and the server's
	cred  scram.StoredCredentials
	user  string
	done  bool
}

var errSCRAM = errors.New("invalid SCRAM message")

// step takes the client's message and returns the server's answer; done
// is set once the client proved it holds the password.
func (c *scramConv) step(msg string) (string, error) {
	if c.first == "" {
		return c.clientFirst(msg)
	}
	if c.done {
		return "", fmt.Errorf("%w: the exchange is over", errSCRAM)
	}
	return c.clientFinal(msg)
}

func (c *scramConv) clientFirst(msg string) (string, error) {
	var rest string
	switch {
	case strings.HasPrefix(msg, "n,,"), strings.HasPrefix(msg, "y,,"):
		c.gs2, rest = msg[:3], msg[3:]
	default:
		return "", fmt.Errorf("%w: GS2 header (channel binding and authorization ids are not supported)", errSCRAM)
	}
	c.bare = rest
	attrs := strings.Split(rest, ",")
	if len(attrs) < 2 || !strings.HasPrefix(attrs[0], "n=") || !strings.HasPrefix(attrs[1], "r=") {
		return "", fmt.Errorf("%w: client-first wants n= then r= (no mandatory extension)", errSCRAM)
	}
	user := strings.NewReplacer("=2C", ",", "=3D", "=").Replace(attrs[0][2:])
	cnonce := attrs[1][2:]
	if user == "" || cnonce == "" {
		return "", fmt.Errorf("%w: empty user or nonce", errSCRAM)
	}
	cred, ok := c.store.creds[user]
	if !ok {
		return "", fmt.Errorf("%w: unknown user", errSCRAM)
	}
	snonce := make([]byte, 18)
	_, _ = rand.Read(snonce)
	c.user, c.cred = user, cred
	c.nonce = cnonce + base64.RawStdEncoding.EncodeToString(snonce)
	c.first = "r=" + c.nonce + ",s=" + base64.StdEncoding.EncodeToString([]byte(cred.Salt)) + ",i=" + strconv.Itoa(cred.Iters)
	return c.first, nil
}

func (c *scramConv) clientFinal(msg string) (string, error) {
	i := strings.LastIndex(msg, ",p=")
	if i < 0 {
		return "", fmt.Errorf("%w: client-final without a proof", errSCRAM)
	}
	withoutProof := msg[:i]
	proof, err := base64.StdEncoding.DecodeString(msg[i+3:])
	if err != nil {
		return "", fmt.Errorf("%w: proof: %w", errSCRAM, err)
	}
	attrs := strings.Split(withoutProof, ",")
	if len(attrs) < 2 || attrs[0] != "c="+base64.StdEncoding.EncodeToString([]byte(c.gs2)) || !strings.HasPrefix(attrs[1], "r=") {
		return "", fmt.Errorf("%w: client-final wants c= (the client-first's header) then r=", errSCRAM)
	}
	// Kafka's rule: the nonce ends with the server's (librdkafka puts its
	// own nonce in front once more).
	if !strings.HasSuffix(attrs[1][2:], c.nonce) {
		return "", fmt.Errorf("%w: nonce", errSCRAM)
	}
	authMsg := []byte(c.bare + "," + c.first + "," + withoutProof)
	sig := hmacOf(c.store.hash, c.cred.StoredKey, authMsg)
	if len(proof) != len(sig) {
		return "", fmt.Errorf("%w: proof of %d bytes", errSCRAM, len(proof))
	}
	clientKey := make([]byte, len(sig))
	for j := range sig {
		clientKey[j] = proof[j] ^ sig[j]
	}
	h := c.store.hash()
	h.Write(clientKey)
	if !hmac.Equal(h.Sum(nil), c.cred.StoredKey) {
		return "", fmt.Errorf("%w: wrong password", errSCRAM)
	}
	c.done = true
	return "v=" + base64.StdEncoding.EncodeToString(hmacOf(c.store.hash, c.cred.ServerKey, authMsg)), nil
}

func hmacOf(h func() hash.Hash, key, msg []byte) []byte {
	m := hmac.New(h, key)
	m.Write(msg)
	return m.Sum(nil)
}

// saslConn is one connection's progress through authentication; the
// connection's reader owns it.
type saslConn struct {
	mech   string // chosen by the handshake; "" before it
	scram  *scramConv
	steps  int
	user   string // set once authenticated
	failed bool   // the connection closes after the answer
}

func (s *saslConn) authenticated() bool { return s.user != "" }

// handshake answers a SaslHandshake.
func (a *saslAuth) handshake(s *saslConn, req *kmsg.SASLHandshakeRequest) *kmsg.SASLHandshakeResponse {
	resp := req.ResponseKind().(*kmsg.SASLHandshakeResponse)
	if a == nil {
		resp.ErrorCode = kerr.UnsupportedSaslMechanism.Code
		return resp
	}
	resp.SupportedMechanisms = slices.Clone(saslMechanisms)
	switch {
	case s.mech != "" || s.authenticated():
		resp.ErrorCode = kerr.IllegalSaslState.Code
		s.failed = true
	case !slices.Contains(saslMechanisms, req.Mechanism):
		resp.ErrorCode = kerr.UnsupportedSaslMechanism.Code
		s.failed = true
	default:
		s.mech = req.Mechanism
		if st := a.scrams[s.mech]; st != nil {
			s.scram = &scramConv{store: st}
		}
	}
	return resp
}

// authenticate answers a SaslAuthenticate: one token of the exchange the
// handshake chose.
func (a *saslAuth) authenticate(s *saslConn, req *kmsg.SASLAuthenticateRequest) *kmsg.SASLAuthenticateResponse {
	resp := req.ResponseKind().(*kmsg.SASLAuthenticateResponse)
	fail := func(code int16, msg string) *kmsg.SASLAuthenticateResponse {
		resp.ErrorCode, resp.ErrorMessage, s.failed = code, &msg, true
		return resp
	}
	if a == nil || s.mech == "" || s.authenticated() {
		return fail(kerr.IllegalSaslState.Code, "SaslAuthenticate without a SaslHandshake before it")
	}
	if s.steps++; s.steps > maxSASLTokens {
		return fail(kerr.IllegalSaslState.Code, "too many SASL tokens")
	}
	if s.mech == mechPlain {
		user, pass, err := parsePlain(req.SASLAuthBytes)
		if err != nil {
			return fail(kerr.SaslAuthenticationFailed.Code, "PLAIN: "+err.Error())
		}
		want, ok := a.users[user]
		// Compared whatever the user, so that timing tells nothing.
		if !authtoken.Equal([]byte(pass), []byte(want)) || !ok {
			return fail(kerr.SaslAuthenticationFailed.Code, "Authentication failed: invalid username or password")
		}
		s.user = user
		return resp
	}
	out, err := s.scram.step(string(req.SASLAuthBytes))
	if err != nil {
		return fail(kerr.SaslAuthenticationFailed.Code, "Authentication failed during authentication due to invalid credentials with SASL mechanism "+s.mech)
	}
	resp.SASLAuthBytes = []byte(out)
	if s.scram.done {
		s.user = s.scram.user
	}
	return resp
}

// parsePlain splits a PLAIN token (RFC 4616): [authzid] NUL user NUL
// password. An authzid, when given, must be the user.
func parsePlain(b []byte) (user, pass string, err error) {
	parts := bytes.Split(b, []byte{0})
	if len(parts) != 3 {
		return "", "", fmt.Errorf("token of %d NUL-separated parts, want 3", len(parts))
	}
	authz, u, p := string(parts[0]), string(parts[1]), string(parts[2])
	switch {
	case u == "" || p == "":
		return "", "", errors.New("empty user or password")
	case authz != "" && authz != u:
		return "", "", fmt.Errorf("authorization id %q is not the user", authz)
	}
	return u, p, nil
}
