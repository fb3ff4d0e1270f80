package grpcapi

import (
	"context"
	"errors"
	"fmt"
	"strings"

	runtimev1pb "github.com/dapr/dapr/pkg/proto/runtime/v1"
	"google.golang.org/protobuf/types/known/emptypb"

	"mecha/runtime/apierr"
	"mecha/runtime/blocks"
	"mecha/runtime/tracecontext"
)

// traceParent is the caller's W3C traceparent from the incoming gRPC
// metadata, or a fresh one, so that every published event is traceable.
func traceParent(ctx context.Context) string {
	return tracecontext.Ensure(firstMD(ctx, "traceparent"))
}

// PublishEvent publishes one event. The data content type is passed
// through unchanged; the envelope treats an empty one as text/plain, as
// Dapr does.
func (s *Server) PublishEvent(ctx context.Context, in *runtimev1pb.PublishEventRequest) (*emptypb.Empty, error) {
	err := s.d.Blocks.Publish(ctx, &blocks.PublishRequest{
		PubsubName:  in.GetPubsubName(),
		Topic:       in.GetTopic(),
		Data:        in.GetData(),
		ContentType: in.GetDataContentType(),
		Metadata:    in.GetMetadata(),
		TraceParent: traceParent(ctx),
		TraceState:  firstMD(ctx, "tracestate"),
	})
	if err != nil {
		return nil, grpcErr(err)
	}
	return &emptypb.Empty{}, nil
}

// BulkPublishEventAlpha1 publishes several events to one topic. As in
// daprd, the call fails with Internal (ERR_PUBSUB_PUBLISH_MESSAGE) when
// any entry failed: daprd's publisher reports partial failures as an
// error, and its gRPC API then returns no failed entries, only the
// error. The message names the failed entries.
func (s *Server) BulkPublishEventAlpha1(ctx context.Context, in *runtimev1pb.BulkPublishRequest) (*runtimev1pb.BulkPublishResponse, error) {
	entries := make([]blocks.BulkEntry, len(in.GetEntries()))
	for i, e := range in.GetEntries() {
		entries[i] = blocks.BulkEntry{EntryID: e.GetEntryId(), Data: e.GetEvent(), ContentType: e.GetContentType(), Metadata: e.GetMetadata()}
	}
	failed, err := s.d.Blocks.BulkPublish(ctx, in.GetPubsubName(), in.GetTopic(), entries, in.GetMetadata(), traceParent(ctx))
	if err != nil {
		return nil, grpcErr(err)
	}
	if len(failed) > 0 {
		var b strings.Builder
		fmt.Fprintf(&b, "%d of %d entries failed:", len(failed), len(entries))
		for i, f := range failed {
			if i == 3 {
				fmt.Fprintf(&b, " and %d more", len(failed)-i)
				break
			}
			fmt.Fprintf(&b, " entry %s: %s;", f.EntryID, f.Error)
		}
		return nil, apierr.PublishFailed(in.GetTopic(), in.GetPubsubName(), errors.New(strings.TrimSuffix(b.String(), ";")))
	}
	return &runtimev1pb.BulkPublishResponse{FailedEntries: []*runtimev1pb.BulkPublishResponseFailedEntry{}}, nil
}
