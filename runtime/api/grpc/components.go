package grpcapi

import (
	"context"

	runtimev1pb "github.com/dapr/dapr/pkg/proto/runtime/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/emptypb"

	"mecha/runtime/api"
)

// InvokeBinding calls an output binding. The caller's traceparent and
// tracestate are added to the binding metadata unless it sets them, and
// the binding's response metadata is also sent as "metadata.<key>" gRPC
// headers, as in Dapr.
func (s *Server) InvokeBinding(ctx context.Context, in *runtimev1pb.InvokeBindingRequest) (*runtimev1pb.InvokeBindingResponse, error) {
	meta := make(map[string]string, len(in.GetMetadata())+2)
	for k, v := range in.GetMetadata() {
		meta[k] = v
	}
	for _, k := range []string{"traceparent", "tracestate"} {
		if _, ok := meta[k]; !ok {
			if v := firstMD(ctx, k); v != "" {
				meta[k] = v
			}
		}
	}
	resp, err := s.d.Blocks.InvokeBinding(ctx, in.GetName(), in.GetOperation(), in.GetData(), meta)
	if err != nil {
		return nil, grpcErr(err)
	}
	if resp == nil {
		return &runtimev1pb.InvokeBindingResponse{}, nil
	}
	if len(resp.Metadata) > 0 {
		md := metadata.MD{}
		for k, v := range resp.Metadata {
			appendMD(md, "metadata."+k, v)
		}
		_ = grpc.SetHeader(ctx, md)
	}
	return &runtimev1pb.InvokeBindingResponse{Data: resp.Data, Metadata: resp.Metadata}, nil
}

// GetSecret reads one secret.
func (s *Server) GetSecret(ctx context.Context, in *runtimev1pb.GetSecretRequest) (*runtimev1pb.GetSecretResponse, error) {
	data, err := s.d.Blocks.GetSecret(ctx, in.GetStoreName(), in.GetKey(), in.GetMetadata())
	if err != nil {
		return nil, grpcErr(err)
	}
	return &runtimev1pb.GetSecretResponse{Data: data}, nil
}

// GetBulkSecret reads every secret of a store.
func (s *Server) GetBulkSecret(ctx context.Context, in *runtimev1pb.GetBulkSecretRequest) (*runtimev1pb.GetBulkSecretResponse, error) {
	data, err := s.d.Blocks.BulkGetSecret(ctx, in.GetStoreName(), in.GetMetadata())
	if err != nil {
		return nil, grpcErr(err)
	}
	out := &runtimev1pb.GetBulkSecretResponse{Data: make(map[string]*runtimev1pb.SecretResponse, len(data))}
	for k, v := range data {
		out.Data[k] = &runtimev1pb.SecretResponse{Secrets: v}
	}
	return out, nil
}

// GetMetadata describes the runtime: app-id, version, components, extended
// metadata, subscriptions and how the app is reached.
func (s *Server) GetMetadata(ctx context.Context, _ *runtimev1pb.GetMetadataRequest) (*runtimev1pb.GetMetadataResponse, error) {
	var m *api.Metadata
	if s.d.Metadata != nil {
		m = s.d.Metadata.Metadata()
	}
	if m == nil {
		return &runtimev1pb.GetMetadataResponse{Id: s.d.AppID}, nil
	}
	return metadataResponse(m), nil
}

// metadataResponse converts the metadata document to its proto form.
func metadataResponse(m *api.Metadata) *runtimev1pb.GetMetadataResponse {
	out := &runtimev1pb.GetMetadataResponse{
		Id:               m.ID,
		RuntimeVersion:   m.RuntimeVersion,
		EnabledFeatures:  m.EnabledFeatures,
		ExtendedMetadata: m.Extended,
	}
	out.RegisteredComponents = make([]*runtimev1pb.RegisteredComponents, len(m.Components))
	for i, c := range m.Components {
		out.RegisteredComponents[i] = &runtimev1pb.RegisteredComponents{
			Name: c.Name, Type: c.Type, Version: c.Version, Capabilities: c.Capabilities,
		}
	}
	out.Subscriptions = make([]*runtimev1pb.PubsubSubscription, len(m.Subscriptions))
	for i, sub := range m.Subscriptions {
		rules := &runtimev1pb.PubsubSubscriptionRules{Rules: make([]*runtimev1pb.PubsubSubscriptionRule, len(sub.Rules))}
		for j, r := range sub.Rules {
			rules.Rules[j] = &runtimev1pb.PubsubSubscriptionRule{Match: r.Match, Path: r.Path}
		}
		out.Subscriptions[i] = &runtimev1pb.PubsubSubscription{
			PubsubName:      sub.PubsubName,
			Topic:           sub.Topic,
			Metadata:        sub.Metadata,
			Rules:           rules,
			DeadLetterTopic: sub.DeadLetterTopic,
			Type:            runtimev1pb.PubsubSubscriptionType(runtimev1pb.PubsubSubscriptionType_value[sub.Type]),
		}
	}
	if p := m.AppConnectionProperties; p != nil {
		out.AppConnectionProperties = &runtimev1pb.AppConnectionProperties{
			Port:           int32(p.Port),
			Protocol:       p.Protocol,
			ChannelAddress: p.ChannelAddress,
			MaxConcurrency: int32(p.MaxConcurrency),
		}
		if h := p.Health; h != nil {
			out.AppConnectionProperties.Health = &runtimev1pb.AppConnectionHealthProperties{
				HealthCheckPath:     h.HealthCheckPath,
				HealthProbeInterval: h.HealthProbeInterval,
				HealthProbeTimeout:  h.HealthProbeTimeout,
				HealthThreshold:     h.HealthThreshold,
			}
		}
	}
	return out
}

// SetMetadata sets a key of the extended metadata; an empty key is a no-op,
// as in Dapr.
func (s *Server) SetMetadata(ctx context.Context, in *runtimev1pb.SetMetadataRequest) (*emptypb.Empty, error) {
	if in.GetKey() != "" && s.d.Metadata != nil {
		if err := s.d.Metadata.SetExtended(in.GetKey(), in.GetValue()); err != nil {
			return nil, grpcErr(err)
		}
	}
	return &emptypb.Empty{}, nil
}

// Shutdown starts a graceful shutdown of the runtime and returns at once.
func (s *Server) Shutdown(ctx context.Context, _ *runtimev1pb.ShutdownRequest) (*emptypb.Empty, error) {
	s.log.Info("shutdown requested through the gRPC API")
	if s.d.Shutdown != nil {
		s.d.Shutdown()
	}
	return &emptypb.Empty{}, nil
}
