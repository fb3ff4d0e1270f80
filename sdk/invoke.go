package sdk

import (
	"context"
	"strconv"
	"strings"

	commonv1pb "github.com/dapr/dapr/pkg/proto/common/v1"
	runtimev1pb "github.com/dapr/dapr/pkg/proto/runtime/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/anypb"
)

// HeaderInstance names the one instance of the called app a call must
// reach (see Instance).
const HeaderInstance = "mecha-instance-id"

// InvokeOption tunes one invocation.
type InvokeOption func(*invokeOpts)

type invokeOpts struct {
	verb, contentType, query string
	md                       []string
}

// Verb is the HTTP verb the app sees (POST unless set).
func Verb(v string) InvokeOption { return func(o *invokeOpts) { o.verb = strings.ToUpper(v) } }

// ContentType is the data's content type.
func ContentType(ct string) InvokeOption { return func(o *invokeOpts) { o.contentType = ct } }

// Query is the query string the app sees, without '?'.
func Query(q string) InvokeOption { return func(o *invokeOpts) { o.query = q } }

// Header passes a header to the app.
func Header(key, value string) InvokeOption {
	return func(o *invokeOpts) { o.md = append(o.md, key, value) }
}

// Instance sends the call to one instance of the app: the one whose
// runtime gave it this id (Metadata.InstanceID, MECHA_INSTANCE_ID). A
// gone instance fails with ErrInstanceNotFound; the call never goes to
// another instance.
func Instance(id string) InvokeOption { return Header(HeaderInstance, id) }

// Response is an app's answer.
type Response struct {
	Data        []byte
	ContentType string
	// Status is an HTTP app's status (200 for a gRPC app).
	Status int
}

// Invoke calls method of appID with data. An HTTP app's non-2xx answer
// is an *Error whose Status is mapped from it, as Dapr does.
func (c *Client) Invoke(ctx context.Context, appID, method string, data []byte, opts ...InvokeOption) (Response, error) {
	o := invokeOpts{verb: "POST"}
	for _, f := range opts {
		f(&o)
	}
	req := &runtimev1pb.InvokeServiceRequest{Id: appID, Message: &commonv1pb.InvokeRequest{
		Method: method, Data: &anypb.Any{Value: data}, ContentType: o.contentType,
		HttpExtension: &commonv1pb.HTTPExtension{Verb: commonv1pb.HTTPExtension_Verb(commonv1pb.HTTPExtension_Verb_value[o.verb]), Querystring: o.query},
	}}
	if len(o.md) > 0 {
		ctx = metadata.AppendToOutgoingContext(ctx, o.md...)
	}
	var out Response
	err := c.call(ctx, func(ctx context.Context, api runtimev1pb.DaprClient) error {
		var hdr metadata.MD
		r, err := api.InvokeService(ctx, req, grpc.Header(&hdr))
		if err != nil {
			return err
		}
		out = Response{Data: r.GetData().GetValue(), ContentType: r.GetContentType(), Status: 200}
		if v := hdr.Get("dapr-http-status"); len(v) > 0 {
			if n, err := strconv.Atoi(v[0]); err == nil {
				out.Status = n
			}
		}
		return nil
	})
	return out, err
}

// InvokeBinding runs operation on the output binding name.
func (c *Client) InvokeBinding(ctx context.Context, name, operation string, data []byte, md map[string]string) ([]byte, map[string]string, error) {
	var out []byte
	var outMD map[string]string
	err := c.call(ctx, func(ctx context.Context, api runtimev1pb.DaprClient) error {
		r, err := api.InvokeBinding(ctx, &runtimev1pb.InvokeBindingRequest{Name: name, Operation: operation, Data: data, Metadata: md})
		if err != nil {
			return err
		}
		out, outMD = r.GetData(), r.GetMetadata()
		return nil
	})
	return out, outMD, err
}

// Metadata is what the runtime says of itself and the app.
type Metadata struct {
	// AppID is the app's id.
	AppID string
	// InstanceID is the id others name to reach this instance of the
	// app (Instance).
	InstanceID     string
	RuntimeVersion string
	// Components are the loaded components' names by type.
	Components map[string]string
	Extended   map[string]string
}

// Metadata reads the runtime's metadata, from the app's own runtime only
// (no fallback).
func (c *Client) Metadata(ctx context.Context) (Metadata, error) {
	var out Metadata
	// Never another runtime's: the answer is about this app's.
	err := fromGRPC(func(api runtimev1pb.DaprClient) error {
		r, err := api.GetMetadata(ctx, &runtimev1pb.GetMetadataRequest{})
		if err != nil {
			return err
		}
		out = Metadata{AppID: r.GetId(), InstanceID: r.GetExtendedMetadata()["instanceId"], RuntimeVersion: r.GetRuntimeVersion(),
			Components: map[string]string{}, Extended: r.GetExtendedMetadata()}
		for _, comp := range r.GetRegisteredComponents() {
			out.Components[comp.GetName()] = comp.GetType()
		}
		return nil
	}(c.local.api))
	return out, err
}
