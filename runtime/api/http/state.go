package httpapi

import (
	"bytes"
	"encoding/json"
	"strconv"

	"github.com/dapr/components-contrib/state"
	"github.com/valyala/fasthttp"

	"mecha/runtime/apierr"
	"mecha/runtime/blocks"
)

// saveItem is one entry of POST /v1.0/state/{store}.
type saveItem struct {
	Key      string            `json:"key"`
	Value    json.RawMessage   `json:"value"`
	ETag     *string           `json:"etag,omitempty"`
	Metadata map[string]string `json:"metadata,omitempty"`
	Options  *stateOptions     `json:"options,omitempty"`
}

type stateOptions struct {
	Concurrency string `json:"concurrency,omitempty"`
	Consistency string `json:"consistency,omitempty"`
}

// stateSave serves POST /v1.0/state/{store}. The blocks check the keys
// (an empty one is ERR_MALFORMED_REQUEST) and the options (an unknown
// one is the store's error, ERR_STATE_SAVE), after the store, as daprd.
func (s *Server) stateSave(ctx *fasthttp.RequestCtx, store string) {
	var items []saveItem
	if err := json.Unmarshal(ctx.PostBody(), &items); err != nil {
		s.bodyError(ctx, s.d.Blocks.CheckState(store, false), apierr.Malformed("failed deserializing HTTP body: %v (want a JSON list of {key, value})", err))
		return
	}
	reqs := make([]state.SetRequest, len(items))
	for i := range items {
		it := &items[i]
		r := &reqs[i]
		r.Key, r.ETag, r.Metadata = it.Key, it.ETag, it.Metadata
		r.Value = []byte(it.Value)
		if it.Options != nil {
			r.Options.Concurrency, r.Options.Consistency = it.Options.Concurrency, it.Options.Consistency
		}
	}
	if err := s.d.Blocks.SaveState(s.call(), store, reqs); err != nil {
		writeError(ctx, err)
		return
	}
	ctx.SetStatusCode(fasthttp.StatusNoContent)
}

func (s *Server) stateGet(ctx *fasthttp.RequestCtx, store, key string) {
	consistency := string(ctx.QueryArgs().Peek("consistency"))
	resp, err := s.d.Blocks.GetState(s.call(), store, key, consistency, queryMetadata(ctx))
	if err != nil {
		writeError(ctx, err)
		return
	}
	if resp == nil || resp.Data == nil {
		ctx.SetStatusCode(fasthttp.StatusNoContent)
		return
	}
	if resp.ETag != nil {
		ctx.Response.Header.SetBytesK(hETag, *resp.ETag)
	}
	for k, v := range resp.Metadata {
		ctx.Response.Header.Set("metadata."+k, v)
	}
	if resp.ContentType != nil && *resp.ContentType != "" {
		ctx.Response.Header.SetContentType(*resp.ContentType)
	} else {
		ctx.Response.Header.SetContentTypeBytes(ctJSON)
	}
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.SetBody(resp.Data)
}

func (s *Server) stateDelete(ctx *fasthttp.RequestCtx, store, key string) {
	args := ctx.QueryArgs()
	req := &state.DeleteRequest{Key: key, Metadata: queryMetadata(ctx)}
	req.Options.Concurrency = string(args.Peek("concurrency"))
	req.Options.Consistency = string(args.Peek("consistency"))
	if etag := ctx.Request.Header.PeekBytes(hIfMatch); len(etag) > 0 {
		e := string(etag)
		req.ETag = &e
	}
	if err := s.d.Blocks.DeleteState(s.call(), store, req); err != nil {
		writeError(ctx, err)
		return
	}
	ctx.SetStatusCode(fasthttp.StatusNoContent)
}

type bulkGetRequest struct {
	Keys        []string          `json:"keys"`
	Parallelism int               `json:"parallelism,omitempty"`
	Metadata    map[string]string `json:"metadata,omitempty"`
}

type bulkGetItem struct {
	Key      string            `json:"key"`
	Data     json.RawMessage   `json:"data,omitempty"`
	ETag     *string           `json:"etag,omitempty"`
	Metadata map[string]string `json:"metadata,omitempty"`
	Error    string            `json:"error,omitempty"`
}

// rawOrString embeds stored bytes that are JSON as is, and anything else as
// a JSON string, so the response stays valid JSON.
func rawOrString(b []byte) json.RawMessage {
	if len(b) == 0 {
		return nil
	}
	if json.Valid(b) {
		return b
	}
	out, _ := json.Marshal(string(b))
	return out
}

func (s *Server) stateBulkGet(ctx *fasthttp.RequestCtx, store string) {
	var req bulkGetRequest
	if err := json.Unmarshal(ctx.PostBody(), &req); err != nil {
		s.bodyError(ctx, s.d.Blocks.CheckState(store, false), apierr.Malformed("failed deserializing HTTP body: %v (want {\"keys\": [...]})", err))
		return
	}
	// Query metadata.* and body metadata merge; the query wins.
	meta := req.Metadata
	if q := queryMetadata(ctx); q != nil {
		if meta == nil {
			meta = q
		} else {
			for k, v := range q {
				meta[k] = v
			}
		}
	}
	cctx, done := s.longCall(ctx)
	defer done()
	resp, err := s.d.Blocks.BulkGetState(cctx, store, req.Keys, req.Parallelism, meta)
	if err != nil {
		writeError(ctx, err)
		return
	}
	out := make([]bulkGetItem, len(resp))
	for i, r := range resp {
		out[i] = bulkGetItem{Key: r.Key, Data: rawOrString(r.Data), ETag: r.ETag, Metadata: r.Metadata, Error: r.Error}
	}
	writeJSON(ctx, fasthttp.StatusOK, out)
}

type txRequest struct {
	Operations []struct {
		Operation string   `json:"operation"`
		Request   saveItem `json:"request"`
	} `json:"operations"`
	Metadata map[string]string `json:"metadata,omitempty"`
}

// stateTransaction serves POST /v1.0/state/{store}/transaction. As in
// daprd, the store must be transactional before the body is read, no
// operations is a 204, and operation types are compared as written
// ("upsert", "delete").
func (s *Server) stateTransaction(ctx *fasthttp.RequestCtx, store string) {
	var req txRequest
	body := bytes.TrimSpace(ctx.PostBody())
	if err := json.Unmarshal(body, &req); err != nil {
		s.bodyError(ctx, s.d.Blocks.CheckState(store, true),
			apierr.Malformed("failed deserializing HTTP body: %v (want {\"operations\": [{\"operation\": \"upsert\", \"request\": {...}}]})", err))
		return
	}
	if len(req.Operations) == 0 {
		if err := s.d.Blocks.CheckState(store, true); err != nil {
			writeError(ctx, err)
			return
		}
		ctx.SetStatusCode(fasthttp.StatusNoContent)
		return
	}
	ops := make([]blocks.TxOp, len(req.Operations))
	for i, o := range req.Operations {
		op := blocks.TxOp{Operation: o.Operation}
		var opts stateOptions
		if o.Request.Options != nil {
			opts = *o.Request.Options
		}
		switch o.Operation {
		case string(state.OperationUpsert):
			op.Set = state.SetRequest{Key: o.Request.Key, Value: []byte(o.Request.Value), ETag: o.Request.ETag, Metadata: o.Request.Metadata,
				Options: state.SetStateOption{Concurrency: opts.Concurrency, Consistency: opts.Consistency}}
		case string(state.OperationDelete):
			op.Delete = state.DeleteRequest{Key: o.Request.Key, ETag: o.Request.ETag, Metadata: o.Request.Metadata,
				Options: state.DeleteStateOption{Concurrency: opts.Concurrency, Consistency: opts.Consistency}}
		}
		ops[i] = op
	}
	cctx, done := s.longCall(ctx)
	defer done()
	if err := s.d.Blocks.Transaction(cctx, store, ops, req.Metadata); err != nil {
		writeError(ctx, err)
		return
	}
	ctx.SetStatusCode(fasthttp.StatusNoContent)
}

// stateScan serves GET /v1.0-alpha1/state/{store}/scan?prefix=&limit=, a
// mecha extension: the app's keys starting with prefix, sorted, with
// their values and ETags, in the bulk get format.
func (s *Server) stateScan(ctx *fasthttp.RequestCtx, store string) {
	args := ctx.QueryArgs()
	limit := 0
	if v := args.Peek("limit"); len(v) > 0 {
		n, err := strconv.Atoi(string(v))
		if err != nil || n < 0 {
			writeError(ctx, apierr.Malformed("limit %q is not a non-negative number", v))
			return
		}
		limit = n
	}
	cctx, done := s.longCall(ctx)
	defer done()
	items, err := s.d.Blocks.ScanState(cctx, store, string(args.Peek("prefix")), limit)
	if err != nil {
		writeError(ctx, err)
		return
	}
	out := make([]bulkGetItem, len(items))
	for i, r := range items {
		out[i] = bulkGetItem{Key: r.Key, Data: rawOrString(r.Data), ETag: r.ETag, Metadata: r.Metadata}
	}
	writeJSON(ctx, fasthttp.StatusOK, out)
}
