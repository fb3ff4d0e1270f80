package appchannel

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/valyala/fasthttp"
)

// HTTPOptions configure an HTTP channel.
type HTTPOptions struct {
	// Address is host:port of the app.
	Address string
	// HealthPath is probed by Health; "/healthz" when empty.
	HealthPath string
	// MaxResponseBytes caps what the app may answer; 0 means 4 MiB.
	MaxResponseBytes int
	// MaxConns caps connections to the app; 0 means 4096. Calls beyond it
	// wait up to 5s for a connection.
	MaxConns int
	// Headers are set on every request (a peer runtime's credentials).
	Headers map[string]string
	// TLS, when set, secures the connections (another runtime's
	// internal port under the cluster's mutual TLS).
	TLS *tls.Config
}

// HTTP calls an app over HTTP/1.1 with fasthttp. Connections are pooled and
// kept alive.
type HTTP struct {
	client     *fasthttp.HostClient
	healthPath string
	headers    map[string]string
}

// NewHTTP returns a channel to the app at opts.Address.
func NewHTTP(opts HTTPOptions) *HTTP {
	if opts.HealthPath == "" {
		opts.HealthPath = "/healthz"
	}
	if !strings.HasPrefix(opts.HealthPath, "/") {
		opts.HealthPath = "/" + opts.HealthPath
	}
	if opts.MaxResponseBytes == 0 {
		opts.MaxResponseBytes = 4 << 20
	}
	if opts.MaxConns == 0 {
		opts.MaxConns = 4096
	}
	return &HTTP{
		headers:    opts.Headers,
		healthPath: opts.HealthPath,
		client: &fasthttp.HostClient{
			Addr:                     opts.Address,
			MaxConns:                 opts.MaxConns,
			MaxConnWaitTimeout:       5 * time.Second,
			MaxResponseBodySize:      opts.MaxResponseBytes,
			MaxIdleConnDuration:      30 * time.Second,
			NoDefaultUserAgentHeader: true,
			DisablePathNormalizing:   true,
			IsTLS:                    opts.TLS != nil,
			TLSConfig:                opts.TLS,
			Dial: func(addr string) (net.Conn, error) {
				return fasthttp.DialDualStackTimeout(addr, 5*time.Second)
			},
		},
	}
}

// Do sends req and fills resp, honouring ctx's deadline. It is the zero-copy
// path the HTTP API uses to proxy an invocation straight to the app.
func (h *HTTP) Do(ctx context.Context, req *fasthttp.Request, resp *fasthttp.Response) error {
	req.SetHost(h.client.Addr)
	if h.client.IsTLS {
		req.URI().SetScheme("https")
	}
	for k, v := range h.headers {
		req.Header.Set(k, v)
	}
	var err error
	if dl, ok := ctx.Deadline(); ok {
		err = h.client.DoDeadline(req, resp, dl)
	} else {
		err = h.client.Do(req, resp)
	}
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrAppUnreachable, h.client.Addr, err)
	}
	return nil
}

// Invoke implements Channel.
func (h *HTTP) Invoke(ctx context.Context, r *InvokeRequest) (*InvokeResponse, error) {
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	verb := r.Verb
	if verb == "" {
		verb = fasthttp.MethodPost
	}
	req.Header.SetMethod(verb)
	uri := "/" + r.Method
	if r.Query != "" {
		uri += "?" + r.Query
	}
	req.SetRequestURI(uri)
	for _, hd := range r.Headers {
		req.Header.Add(hd.Key, hd.Value)
	}
	if r.ContentType != "" {
		req.Header.SetContentType(r.ContentType)
	}
	req.SetBodyRaw(r.Body)
	if err := h.Do(ctx, req, resp); err != nil {
		return nil, err
	}
	out := &InvokeResponse{
		Status:      resp.StatusCode(),
		ContentType: string(resp.Header.ContentType()),
		Body:        append([]byte(nil), resp.Body()...),
	}
	for k, v := range resp.Header.All() {
		out.Headers = append(out.Headers, Header{Key: string(k), Value: string(v)})
	}
	return out, nil
}

func (h *HTTP) simple(ctx context.Context, method, path, contentType string, body []byte, headers map[string]string, resp *fasthttp.Response) error {
	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	req.Header.SetMethod(method)
	req.SetRequestURI(path)
	if contentType != "" {
		req.Header.SetContentType(contentType)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	req.SetBodyRaw(body)
	return h.Do(ctx, req, resp)
}

// Subscriptions implements Channel: GET /dapr/subscribe. A 404 means the
// app has none.
func (h *HTTP) Subscriptions(ctx context.Context) ([]Subscription, error) {
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseResponse(resp)
	if err := h.simple(ctx, fasthttp.MethodGet, "/dapr/subscribe", "", nil, nil, resp); err != nil {
		return nil, err
	}
	switch {
	case resp.StatusCode() == fasthttp.StatusNotFound:
		return nil, nil
	case resp.StatusCode() >= 300:
		return nil, fmt.Errorf("GET /dapr/subscribe: app answered %d", resp.StatusCode())
	}
	body := bytes.TrimSpace(resp.Body())
	if len(body) == 0 {
		return nil, nil
	}
	var subs []Subscription
	if err := json.Unmarshal(body, &subs); err != nil {
		return nil, fmt.Errorf("GET /dapr/subscribe: app answered an invalid subscription list: %v", err)
	}
	return subs, nil
}

// DeliverEvent implements Channel with Dapr's HTTP contract: 2xx with an
// empty body or {"status":"SUCCESS"} is success, RETRY retries, DROP drops,
// 404 drops, any other status retries.
func (h *HTTP) DeliverEvent(ctx context.Context, ev *TopicEvent) (EventStatus, error) {
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseResponse(resp)
	ct := "application/cloudevents+json"
	if ev.Raw {
		ct = "application/octet-stream"
	}
	// Component metadata (Kafka headers, partition, offset...) travels as
	// headers, as in Dapr.
	hdr := headerSafe(ev.Metadata)
	hdr["pubsubname"], hdr["topic"] = ev.PubsubName, ev.Topic
	if ev.TraceParent != "" {
		hdr["traceparent"] = ev.TraceParent
	}
	if err := h.simple(ctx, fasthttp.MethodPost, "/"+ev.Path, ct, ev.CloudEvent, hdr, resp); err != nil {
		return StatusRetry, err
	}
	return eventStatus(resp.StatusCode(), resp.Body())
}

func eventStatus(code int, body []byte) (EventStatus, error) {
	switch {
	case code == fasthttp.StatusNotFound:
		return StatusDrop, nil
	case code < 200 || code > 299:
		return StatusRetry, fmt.Errorf("app answered HTTP %d", code)
	}
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return StatusSuccess, nil
	}
	var r struct {
		Status string `json:"status"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		// Dapr treats an unparseable 2xx body as success.
		return StatusSuccess, nil
	}
	return parseStatus(r.Status)
}

func parseStatus(s string) (EventStatus, error) {
	switch strings.ToUpper(s) {
	case "", "SUCCESS":
		return StatusSuccess, nil
	case "RETRY":
		return StatusRetry, nil
	case "DROP":
		return StatusDrop, nil
	}
	return StatusRetry, fmt.Errorf("app answered unknown status %q", s)
}

// DeliverBulk implements Channel.
func (h *HTTP) DeliverBulk(ctx context.Context, ev *BulkEvent) (map[string]EventStatus, error) {
	type entry struct {
		EntryID     string            `json:"entryId"`
		Event       json.RawMessage   `json:"event"`
		ContentType string            `json:"contentType,omitempty"`
		Metadata    map[string]string `json:"metadata,omitempty"`
	}
	payload := struct {
		Entries    []entry           `json:"entries"`
		ID         string            `json:"id"`
		Metadata   map[string]string `json:"metadata,omitempty"`
		PubsubName string            `json:"pubsubname"`
		Topic      string            `json:"topic"`
		Type       string            `json:"type"`
	}{ID: ev.ID, Metadata: ev.Metadata, PubsubName: ev.PubsubName, Topic: ev.Topic, Type: "com.dapr.event.sent"}
	if payload.ID == "" {
		payload.ID = uuid.NewString()
	}
	for _, e := range ev.Entries {
		raw := e.Event
		if ev.Raw || !json.Valid(raw) {
			// Raw payloads travel as JSON strings.
			raw, _ = json.Marshal(string(e.Event))
		}
		payload.Entries = append(payload.Entries, entry{EntryID: e.EntryID, Event: raw, ContentType: e.ContentType, Metadata: e.Metadata})
	}
	body, err := json.Marshal(payload)
	if err != nil {
		return nil, err
	}
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseResponse(resp)
	if err := h.simple(ctx, fasthttp.MethodPost, "/"+ev.Path, "application/cloudevents-batch+json", body, nil, resp); err != nil {
		return nil, err
	}
	out := make(map[string]EventStatus, len(ev.Entries))
	code := resp.StatusCode()
	if code == fasthttp.StatusNotFound {
		for _, e := range ev.Entries {
			out[e.EntryID] = StatusDrop
		}
		return out, nil
	}
	if code < 200 || code > 299 {
		return nil, fmt.Errorf("app answered HTTP %d to bulk delivery", code)
	}
	var r struct {
		Statuses []struct {
			EntryID string `json:"entryId"`
			Status  string `json:"status"`
		} `json:"statuses"`
	}
	if b := bytes.TrimSpace(resp.Body()); len(b) > 0 {
		if err := json.Unmarshal(b, &r); err != nil {
			return nil, fmt.Errorf("app answered an invalid bulk response: %v", err)
		}
	} else {
		for _, e := range ev.Entries {
			out[e.EntryID] = StatusSuccess
		}
		return out, nil
	}
	for _, s := range r.Statuses {
		st, err := parseStatus(s.Status)
		if err != nil {
			st = StatusRetry
		}
		out[s.EntryID] = st
	}
	return out, nil
}

// BindingSubscribed implements Channel: OPTIONS /{name}; anything but 404
// means the app takes the binding's events, as in Dapr.
func (h *HTTP) BindingSubscribed(ctx context.Context, name string) (bool, error) {
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseResponse(resp)
	if err := h.simple(ctx, fasthttp.MethodOptions, "/"+name, "", nil, nil, resp); err != nil {
		return false, err
	}
	return resp.StatusCode() != fasthttp.StatusNotFound, nil
}

// DeliverBinding implements Channel: POST /{name} with the data as body and
// the metadata as headers.
func (h *HTTP) DeliverBinding(ctx context.Context, ev *BindingEvent) ([]byte, error) {
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseResponse(resp)
	ct := ev.Metadata["content-type"]
	if ct == "" {
		ct = ev.Metadata["contentType"]
	}
	if ct == "" {
		ct = "application/json"
	}
	if err := h.simple(ctx, fasthttp.MethodPost, "/"+ev.Name, ct, ev.Data, headerSafe(ev.Metadata), resp); err != nil {
		return nil, err
	}
	if c := resp.StatusCode(); c < 200 || c > 299 {
		return nil, fmt.Errorf("app answered HTTP %d to input binding %s", c, ev.Name)
	}
	return append([]byte(nil), resp.Body()...), nil
}

func headerSafe(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		if k == "" || strings.ContainsAny(k, " \r\n:") || strings.ContainsAny(v, "\r\n") {
			continue
		}
		out[k] = v
	}
	return out
}

// Health implements Channel: GET the health path, 2xx is healthy.
func (h *HTTP) Health(ctx context.Context) error {
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseResponse(resp)
	if err := h.simple(ctx, fasthttp.MethodGet, h.healthPath, "", nil, nil, resp); err != nil {
		return err
	}
	if c := resp.StatusCode(); c < 200 || c > 299 {
		return fmt.Errorf("app health check %s answered %s", h.healthPath, strconv.Itoa(c))
	}
	return nil
}

// Close implements Channel.
func (h *HTTP) Close() error {
	h.client.CloseIdleConnections()
	return nil
}

// Addr is the host:port the channel calls.
func (h *HTTP) Addr() string { return h.client.Addr }
