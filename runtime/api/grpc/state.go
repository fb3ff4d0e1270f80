package grpcapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/dapr/components-contrib/state"
	commonv1pb "github.com/dapr/dapr/pkg/proto/common/v1"
	runtimev1pb "github.com/dapr/dapr/pkg/proto/runtime/v1"
	"google.golang.org/protobuf/types/known/emptypb"

	"mecha/runtime/apierr"
	"mecha/runtime/blocks"
)

// consistency maps Dapr's enum to the components' strings; unspecified is
// "" (the store's default).
func consistency(c commonv1pb.StateOptions_StateConsistency) string {
	switch c {
	case commonv1pb.StateOptions_CONSISTENCY_EVENTUAL:
		return "eventual"
	case commonv1pb.StateOptions_CONSISTENCY_STRONG:
		return "strong"
	}
	return ""
}

// concurrency maps Dapr's enum to the components' strings; unspecified is
// "" (the store's default).
func concurrency(c commonv1pb.StateOptions_StateConcurrency) string {
	switch c {
	case commonv1pb.StateOptions_CONCURRENCY_FIRST_WRITE:
		return "first-write"
	case commonv1pb.StateOptions_CONCURRENCY_LAST_WRITE:
		return "last-write"
	}
	return ""
}

func etagPtr(e *commonv1pb.Etag) *string {
	if e == nil {
		return nil
	}
	v := e.GetValue()
	return &v
}

func strOrEmpty(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// setRequest converts a StateItem. The value stays raw bytes: the store
// keeps exactly what the app sent.
func setRequest(it *commonv1pb.StateItem) state.SetRequest {
	req := state.SetRequest{Key: it.GetKey(), Value: it.GetValue(), Metadata: it.GetMetadata(), ETag: etagPtr(it.GetEtag())}
	if o := it.GetOptions(); o != nil {
		req.Options = state.SetStateOption{Concurrency: concurrency(o.GetConcurrency()), Consistency: consistency(o.GetConsistency())}
	}
	return req
}

func deleteRequest(key string, etag *commonv1pb.Etag, opts *commonv1pb.StateOptions, meta map[string]string) state.DeleteRequest {
	req := state.DeleteRequest{Key: key, ETag: etagPtr(etag), Metadata: meta}
	if opts != nil {
		req.Options = state.DeleteStateOption{Concurrency: concurrency(opts.GetConcurrency()), Consistency: consistency(opts.GetConsistency())}
	}
	return req
}

// GetState reads one key. A missing key is an empty response, not an
// error, as in Dapr.
func (s *Server) GetState(ctx context.Context, in *runtimev1pb.GetStateRequest) (*runtimev1pb.GetStateResponse, error) {
	resp, err := s.d.Blocks.GetState(ctx, in.GetStoreName(), in.GetKey(), consistency(in.GetConsistency()), in.GetMetadata())
	if err != nil {
		return nil, grpcErr(err)
	}
	out := &runtimev1pb.GetStateResponse{}
	if resp != nil {
		out.Data, out.Etag, out.Metadata = resp.Data, strOrEmpty(resp.ETag), resp.Metadata
	}
	return out, nil
}

// GetBulkState reads several keys; a key that failed carries its error
// string in its item instead of failing the call.
func (s *Server) GetBulkState(ctx context.Context, in *runtimev1pb.GetBulkStateRequest) (*runtimev1pb.GetBulkStateResponse, error) {
	items, err := s.d.Blocks.BulkGetState(ctx, in.GetStoreName(), in.GetKeys(), int(in.GetParallelism()), in.GetMetadata())
	if err != nil {
		return nil, grpcErr(err)
	}
	out := &runtimev1pb.GetBulkStateResponse{Items: make([]*runtimev1pb.BulkStateItem, len(items))}
	for i, it := range items {
		out.Items[i] = &runtimev1pb.BulkStateItem{
			Key: it.Key, Data: it.Data, Etag: strOrEmpty(it.ETag), Error: it.Error, Metadata: it.Metadata,
		}
	}
	return out, nil
}

// scanQuery is the query QueryStateAlpha1 takes: mecha's key scan, the
// gRPC form of GET /v1.0-alpha1/state/{store}/scan. Dapr's query language
// (filters on values, sorting) is not served.
type scanQuery struct {
	Prefix *string `json:"prefix"`
	Page   struct {
		Limit int `json:"limit"`
	} `json:"page"`
}

// QueryStateAlpha1 serves mecha's key scan: the query
// {"prefix": "p", "page": {"limit": n}} answers the app's keys starting
// with p, sorted, with their values and ETags (a {hash tag} in the
// prefix reads one slot). Any other query is refused, naming what it
// has.
func (s *Server) QueryStateAlpha1(ctx context.Context, in *runtimev1pb.QueryStateRequest) (*runtimev1pb.QueryStateResponse, error) {
	var q scanQuery
	dec := json.NewDecoder(strings.NewReader(in.GetQuery()))
	dec.DisallowUnknownFields()
	err := dec.Decode(&q)
	if err == nil && dec.More() {
		err = errors.New("data after the query")
	}
	if err != nil || q.Prefix == nil || q.Page.Limit < 0 {
		why := "it has no \"prefix\""
		switch {
		case err != nil:
			why = err.Error()
		case q.Page.Limit < 0:
			why = fmt.Sprintf("page.limit %d is negative", q.Page.Limit)
		}
		query := in.GetQuery()
		if len(query) > 200 {
			query = query[:200] + "…"
		}
		return nil, grpcErr(apierr.Malformed("query %q: mecha serves only the key scan {\"prefix\": \"p\", \"page\": {\"limit\": n}}: %s", query, why))
	}
	items, err := s.d.Blocks.ScanState(ctx, in.GetStoreName(), *q.Prefix, q.Page.Limit)
	if err != nil {
		return nil, grpcErr(err)
	}
	out := &runtimev1pb.QueryStateResponse{Results: make([]*runtimev1pb.QueryStateItem, len(items))}
	for i, it := range items {
		out.Results[i] = &runtimev1pb.QueryStateItem{Key: it.Key, Data: it.Data, Etag: strOrEmpty(it.ETag)}
	}
	return out, nil
}

// SaveState writes the items.
func (s *Server) SaveState(ctx context.Context, in *runtimev1pb.SaveStateRequest) (*emptypb.Empty, error) {
	items := make([]state.SetRequest, len(in.GetStates()))
	for i, it := range in.GetStates() {
		items[i] = setRequest(it)
	}
	if err := s.d.Blocks.SaveState(ctx, in.GetStoreName(), items); err != nil {
		return nil, grpcErr(err)
	}
	return &emptypb.Empty{}, nil
}

// DeleteState deletes one key, with an optional ETag.
func (s *Server) DeleteState(ctx context.Context, in *runtimev1pb.DeleteStateRequest) (*emptypb.Empty, error) {
	req := deleteRequest(in.GetKey(), in.GetEtag(), in.GetOptions(), in.GetMetadata())
	if err := s.d.Blocks.DeleteState(ctx, in.GetStoreName(), &req); err != nil {
		return nil, grpcErr(err)
	}
	return &emptypb.Empty{}, nil
}

// DeleteBulkState deletes several keys.
func (s *Server) DeleteBulkState(ctx context.Context, in *runtimev1pb.DeleteBulkStateRequest) (*emptypb.Empty, error) {
	reqs := make([]state.DeleteRequest, len(in.GetStates()))
	for i, it := range in.GetStates() {
		reqs[i] = deleteRequest(it.GetKey(), it.GetEtag(), it.GetOptions(), it.GetMetadata())
	}
	if err := s.d.Blocks.DeleteBulkState(ctx, in.GetStoreName(), reqs); err != nil {
		return nil, grpcErr(err)
	}
	return &emptypb.Empty{}, nil
}

// ExecuteStateTransaction runs upserts and deletes atomically. The
// operation types go to the blocks as written: an unknown one is
// Unimplemented (ERR_NOT_SUPPORTED_STATE_OPERATION), after the store's
// own checks, as in daprd.
func (s *Server) ExecuteStateTransaction(ctx context.Context, in *runtimev1pb.ExecuteStateTransactionRequest) (*emptypb.Empty, error) {
	ops := make([]blocks.TxOp, len(in.GetOperations()))
	for i, op := range in.GetOperations() {
		it := op.GetRequest()
		ops[i].Operation = op.GetOperationType()
		switch state.OperationType(op.GetOperationType()) {
		case state.OperationUpsert:
			ops[i].Set = setRequest(it)
		case state.OperationDelete:
			ops[i].Delete = deleteRequest(it.GetKey(), it.GetEtag(), it.GetOptions(), it.GetMetadata())
		}
	}
	if err := s.d.Blocks.Transaction(ctx, in.GetStoreName(), ops, in.GetMetadata()); err != nil {
		return nil, grpcErr(err)
	}
	return &emptypb.Empty{}, nil
}
