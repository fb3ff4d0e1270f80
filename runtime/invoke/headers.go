package invoke

import "strings"

// Headers the runtimes set on invocations. An app never sets them: the
// runtime says who calls whom, and proves it to another runtime with the
// peer token.
const (
	// HeaderCaller names the calling app.
	HeaderCaller = "dapr-caller-app-id"
	// HeaderCallee names the called app.
	HeaderCallee = "dapr-callee-app-id"
	// HeaderAppID is how an app names the app it invokes (instead of
	// /v1.0/invoke/{id}/method/…, or as gRPC metadata for proxying).
	HeaderAppID = "dapr-app-id"
	// HeaderAPIToken is the app's credential for its runtime's API.
	HeaderAPIToken = "dapr-api-token"
	// TokenHeader carries the peer token between runtimes.
	TokenHeader = "mecha-peer-token"
	// HeaderInstance names the one instance of the called app a call
	// must reach: the instance id its runtime gives the app
	// (EnvInstance, the metadata API) and publishes in the catalog, the
	// runtime's node name and incarnation (node@incarnation): a runtime
	// started again is a new instance. It is not reserved: it travels
	// with the call to the runtime that hosts the instance, which checks
	// it, and the app sees it.
	HeaderInstance = "mecha-instance-id"
	// HeaderErrorCode marks an error answer of another runtime's
	// internal port (not of its app) with its Dapr error code, so that
	// the caller's gRPC API returns that error rather than an app's
	// HTTP status.
	HeaderErrorCode = "mecha-error-code"
	// EnvInstance is the environment variable that gives an app started
	// by its runtime (--app with a command) its instance id.
	EnvInstance = "MECHA_INSTANCE_ID"
	// ProbeHeader marks a load balancer's probe of an ejected instance:
	// the internal port answers it itself, 204 when the app is connected.
	ProbeHeader = "mecha-probe"
)

// Reserved reports whether a request header or gRPC metadata key (in
// any case) belongs to the transport or the runtime and is never passed
// on from a caller to an app: hop-by-hop headers, the length and host,
// HTTP/2 pseudo-headers and grpc-* keys, who calls whom, and
// credentials. Content-Type is not reserved (each edge carries it its
// own way). It is the one list every invocation path uses.
func Reserved(key string) bool {
	if key == "" || key[0] == ':' {
		return true
	}
	if len(key) > 5 && strings.EqualFold(key[:5], "grpc-") {
		return true
	}
	for _, r := range reserved {
		if strings.EqualFold(key, r) {
			return true
		}
	}
	return false
}

var reserved = [...]string{
	"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te", "trailer",
	"host", "content-length",
	HeaderAppID, HeaderCaller, HeaderCallee, HeaderAPIToken, TokenHeader, ProbeHeader,
}
