package grpcapi

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"

	commonv1pb "github.com/dapr/dapr/pkg/proto/common/v1"
	runtimev1pb "github.com/dapr/dapr/pkg/proto/runtime/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"

	"mecha/runtime/apierr"
	"mecha/runtime/appchannel"
	"mecha/runtime/invoke"
	"mecha/runtime/tracecontext"
)

// InvokeService calls a method of an app (the deprecated non-proxy
// invocation the SDKs' InvokeMethod* use). The caller's gRPC metadata
// travels as headers. The app's answer comes back as data and content
// type; an HTTP app's non-2xx status becomes a gRPC error the way Dapr
// makes it (httpAppError), and a gRPC app's error keeps its code and
// message (grpcAppError).
func (s *Server) InvokeService(ctx context.Context, in *runtimev1pb.InvokeServiceRequest) (*commonv1pb.InvokeResponse, error) {
	msg := in.GetMessage()
	if msg == nil {
		return nil, apierr.BadRequest("message is missing")
	}
	if s.d.Invoker == nil {
		return nil, apierr.AppChannelNotFound()
	}
	ext := msg.GetHttpExtension()
	req := &appchannel.InvokeRequest{
		Method:      strings.TrimPrefix(msg.GetMethod(), "/"),
		Query:       ext.GetQuerystring(),
		ContentType: msg.GetContentType(),
		Headers:     headersFromMD(ctx),
		Body:        msg.GetData().GetValue(),
	}
	if v := ext.GetVerb(); v != commonv1pb.HTTPExtension_NONE {
		req.Verb = v.String()
	}
	resp, t, err := s.d.Invoker.Invoke(ctx, in.GetId(), req)
	if err != nil {
		return nil, grpcErr(err)
	}
	_, isHTTP := t.Channel.(*appchannel.HTTP)
	md := metadata.MD{}
	for _, h := range resp.Headers {
		k := strings.ToLower(h.Key)
		if k == "content-type" && !isHTTP {
			continue
		}
		if isHTTP && permanentHTTPHeader[k] {
			k = "dapr-" + k
		}
		appendMD(md, k, h.Value)
	}
	if isHTTP {
		md.Set("dapr-http-status", strconv.Itoa(resp.Status))
	}
	if len(md) > 0 {
		// Only fails when headers were sent already, which they were not.
		_ = grpc.SetHeader(ctx, md)
	}
	if resp.Status < 200 || resp.Status > 299 {
		if code := invoke.HeaderValue(resp.Headers, invoke.HeaderErrorCode); code != "" && t.Remote {
			return nil, grpcErr(peerError(code, resp.Status, resp.Body))
		}
		if isHTTP {
			return nil, httpAppError(resp.Status, resp.Body)
		}
		return nil, grpcAppError(resp.Status, resp.Body)
	}
	return &commonv1pb.InvokeResponse{Data: &anypb.Any{Value: resp.Body}, ContentType: resp.ContentType}, nil
}

// headersFromMD turns the caller's gRPC metadata into headers for the app,
// leaving out what belongs to the transport. Binary (-bin) values are
// base64-encoded, since HTTP headers cannot carry them; the gRPC app
// channel decodes them again.
func headersFromMD(ctx context.Context) []appchannel.Header {
	md, _ := metadata.FromIncomingContext(ctx)
	var out []appchannel.Header
	for k, vs := range md {
		if isReservedMD(k) || k == "traceparent" {
			continue
		}
		bin := strings.HasSuffix(k, "-bin")
		for _, v := range vs {
			if bin {
				v = base64.StdEncoding.EncodeToString([]byte(v))
			}
			out = append(out, appchannel.Header{Key: k, Value: v})
		}
	}
	// This hop is a new span in the caller's trace (tracestate passes).
	return append(out, appchannel.Header{Key: "traceparent", Value: tracecontext.Child(firstMD(ctx, "traceparent"))})
}

// appendMD adds a response header to md if gRPC can carry it: keys are
// lowercased, pseudo and grpc-* keys and keys or values with characters
// gRPC refuses are dropped, and base64 -bin values are decoded (gRPC
// encodes them itself).
func appendMD(md metadata.MD, key, value string) {
	k := strings.ToLower(key)
	if isReservedMD(k) {
		return
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !(c >= 'a' && c <= 'z') && !(c >= '0' && c <= '9') && c != '.' && c != '-' && c != '_' {
			return
		}
	}
	if strings.HasSuffix(k, "-bin") {
		b, err := base64.StdEncoding.DecodeString(value)
		if err != nil {
			return
		}
		md.Append(k, string(b))
		return
	}
	for i := 0; i < len(value); i++ {
		if value[i] < 0x20 || value[i] > 0x7e {
			return
		}
	}
	md.Append(k, value)
}

// permanentHTTPHeader are the IANA permanent headers that Dapr prefixes
// with "dapr-" when it turns an HTTP app's response headers into gRPC
// metadata, so that they cannot clash with HTTP/2's own.
var permanentHTTPHeader = map[string]bool{
	"accept": true, "accept-charset": true, "accept-language": true, "accept-ranges": true,
	"connection": true, "keep-alive": true, "proxy-connection": true, "transfer-encoding": true,
	"upgrade": true, "cache-control": true, "content-type": true, "content-length": true,
	"cookie": true, "date": true, "expect": true, "from": true, "host": true, "if-match": true,
	"if-modified-since": true, "if-none-match": true, "if-schedule-tag-match": true,
	"if-unmodified-since": true, "max-forwards": true, "origin": true, "pragma": true,
	"referer": true, "via": true, "warning": true,
}

// codeFromHTTPStatus is Dapr 1.14's CodeFromHTTPStatus (pkg/messaging/v1),
// the code an HTTP app's status becomes on the gRPC API. Note that Dapr
// maps 400 to Internal and 409 to AlreadyExists.
func codeFromHTTPStatus(httpStatus int) codes.Code {
	if httpStatus >= 200 && httpStatus < 300 {
		return codes.OK
	}
	switch httpStatus {
	case http.StatusRequestTimeout:
		return codes.Canceled
	case http.StatusInternalServerError:
		return codes.Unknown
	case http.StatusBadRequest:
		return codes.Internal
	case http.StatusGatewayTimeout:
		return codes.DeadlineExceeded
	case http.StatusNotFound:
		return codes.NotFound
	case http.StatusConflict:
		return codes.AlreadyExists
	case http.StatusForbidden:
		return codes.PermissionDenied
	case http.StatusUnauthorized:
		return codes.Unauthenticated
	case http.StatusTooManyRequests:
		return codes.ResourceExhausted
	case http.StatusNotImplemented:
		return codes.Unimplemented
	case http.StatusServiceUnavailable:
		return codes.Unavailable
	}
	return codes.Unknown
}

// peerError is the error another runtime answered for the call (not its
// app): its Dapr code and message, with the gRPC code of its HTTP
// status.
func peerError(code string, httpStatus int, body []byte) *apierr.Error {
	var b struct{ Message string }
	if json.Unmarshal(body, &b) != nil || b.Message == "" {
		b.Message = http.StatusText(httpStatus)
	}
	return &apierr.Error{Code: code, HTTP: httpStatus, GRPC: codeFromHTTPStatus(httpStatus), Message: b.Message}
}

// maxErrorDetail is how much of an HTTP app's error body Dapr keeps in the
// ErrorInfo metadata (maxMetadataValueLen).
const maxErrorDetail = 63

// httpAppError is Dapr's ErrorFromHTTPResponseCode: the code from
// codeFromHTTPStatus, the status text as message, and an ErrorInfo detail
// (domain dapr.io) whose metadata carries http.code and the start of the
// body as http.error_message.
func httpAppError(httpStatus int, body []byte) error {
	text := http.StatusText(httpStatus)
	st := status.New(codeFromHTTPStatus(httpStatus), text)
	detail := string(body)
	if len(detail) >= maxErrorDetail {
		detail = detail[:maxErrorDetail]
	}
	withInfo, err := st.WithDetails(&errdetails.ErrorInfo{
		Reason: text,
		Domain: "dapr.io",
		Metadata: map[string]string{
			"http.code":          strconv.Itoa(httpStatus),
			"http.error_message": detail,
		},
	})
	if err != nil {
		return st.Err()
	}
	return withInfo.Err()
}

// codeFromAppStatus inverts appchannel.HTTPStatusFromCode: a gRPC app's
// error reaches this package as an HTTP status, and Dapr hands a gRPC
// app's code through unchanged, so the inverse recovers it (exactly for
// every code but the ones HTTPStatusFromCode merges).
func codeFromAppStatus(httpStatus int) codes.Code {
	switch httpStatus {
	case http.StatusBadRequest:
		return codes.InvalidArgument
	case http.StatusRequestTimeout:
		return codes.Canceled
	case http.StatusGatewayTimeout:
		return codes.DeadlineExceeded
	case http.StatusNotFound:
		return codes.NotFound
	case http.StatusConflict:
		return codes.Aborted
	case http.StatusForbidden:
		return codes.PermissionDenied
	case http.StatusUnauthorized:
		return codes.Unauthenticated
	case http.StatusTooManyRequests:
		return codes.ResourceExhausted
	case http.StatusNotImplemented:
		return codes.Unimplemented
	case http.StatusServiceUnavailable:
		return codes.Unavailable
	}
	return codes.Unknown
}

// grpcAppError rebuilds a gRPC app's error: its code, and its message,
// which the gRPC channel returned as the body.
func grpcAppError(httpStatus int, body []byte) error {
	return status.Error(codeFromAppStatus(httpStatus), string(body))
}
