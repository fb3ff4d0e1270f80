// Package appchannel is how the runtime calls into its local app: service
// invocation, topic event delivery, input binding events and health probes,
// over HTTP (Dapr's app HTTP contract) or gRPC (AppCallback).
package appchannel

import (
	"context"
	"errors"

	"github.com/valyala/fasthttp"
)

// ErrAppUnreachable is wrapped by errors from failing to reach the app at
// all, as opposed to the app answering with an error.
var ErrAppUnreachable = errors.New("app unreachable")

// Header is one HTTP header or gRPC metadata pair.
type Header struct {
	Key, Value string
}

// InvokeRequest is a service invocation of the local app, independent of
// the API it came in on.
type InvokeRequest struct {
	// Method is the app path without its leading slash ("orders/1").
	Method string
	// Verb is the HTTP verb; empty means POST.
	Verb string
	// Query is the raw query string, without '?'.
	Query       string
	ContentType string
	Headers     []Header
	Body        []byte
}

// InvokeResponse is the app's answer. Status is an HTTP status; gRPC apps
// answer 200 or a status mapped from their gRPC code.
type InvokeResponse struct {
	Status      int
	ContentType string
	Headers     []Header
	Body        []byte
}

// Subscription is one topic subscription as the app declares it
// (GET /dapr/subscribe or ListTopicSubscriptions).
type Subscription struct {
	PubsubName      string            `json:"pubsubname"`
	Topic           string            `json:"topic"`
	Route           string            `json:"route,omitempty"`
	Routes          *Routes           `json:"routes,omitempty"`
	Metadata        map[string]string `json:"metadata,omitempty"`
	DeadLetterTopic string            `json:"deadLetterTopic,omitempty"`
	BulkSubscribe   *BulkSubscribe    `json:"bulkSubscribe,omitempty"`
}

// Routes are CEL rules tried in order, then the default path.
type Routes struct {
	Rules   []Rule `json:"rules,omitempty"`
	Default string `json:"default,omitempty"`
}

// Rule routes events whose CEL Match is true to Path.
type Rule struct {
	Match string `json:"match"`
	Path  string `json:"path"`
}

// BulkSubscribe turns on batched delivery.
type BulkSubscribe struct {
	Enabled            bool  `json:"enabled"`
	MaxMessagesCount   int32 `json:"maxMessagesCount,omitempty"`
	MaxAwaitDurationMs int32 `json:"maxAwaitDurationMs,omitempty"`
}

// EventStatus is the app's verdict on one delivered event.
type EventStatus int

// Event statuses, as in Dapr.
const (
	StatusSuccess EventStatus = iota
	StatusRetry
	StatusDrop
)

// String names the status.
func (s EventStatus) String() string {
	switch s {
	case StatusSuccess:
		return "success"
	case StatusRetry:
		return "retry"
	case StatusDrop:
		return "drop"
	}
	return "unknown"
}

// TopicEvent is one event to deliver.
type TopicEvent struct {
	// Path is the app route, without leading slash.
	Path       string
	PubsubName string
	Topic      string
	// CloudEvent is the JSON envelope. For raw-payload subscriptions it is
	// the raw data and Raw is set.
	CloudEvent []byte
	Raw        bool
	// Metadata from the component (partition, offset, ...).
	Metadata    map[string]string
	TraceParent string
}

// BulkEntry is one event of a bulk delivery.
type BulkEntry struct {
	EntryID     string
	Event       []byte // the CloudEvent JSON (or raw data when Raw)
	ContentType string
	Metadata    map[string]string
}

// BulkEvent is a batch of events for one route.
type BulkEvent struct {
	ID         string
	Path       string
	PubsubName string
	Topic      string
	Raw        bool
	Entries    []BulkEntry
	Metadata   map[string]string
}

// BindingEvent is one input binding event to deliver.
type BindingEvent struct {
	Name     string
	Data     []byte
	Metadata map[string]string
}

// Channel calls the local app. Implementations are safe for concurrent use.
type Channel interface {
	// Invoke calls a method of the app.
	Invoke(ctx context.Context, req *InvokeRequest) (*InvokeResponse, error)
	// Subscriptions asks the app for its programmatic subscriptions.
	Subscriptions(ctx context.Context) ([]Subscription, error)
	// DeliverEvent sends one topic event and returns the app's verdict. An
	// error means the delivery failed and should be retried.
	DeliverEvent(ctx context.Context, ev *TopicEvent) (EventStatus, error)
	// DeliverBulk sends a batch and returns a verdict per entry ID; entries
	// missing from the map are to be retried.
	DeliverBulk(ctx context.Context, ev *BulkEvent) (map[string]EventStatus, error)
	// BindingSubscribed reports whether the app accepts events from the
	// named input binding.
	BindingSubscribed(ctx context.Context, name string) (bool, error)
	// DeliverBinding sends an input binding event; the returned bytes are
	// the app's reply.
	DeliverBinding(ctx context.Context, ev *BindingEvent) ([]byte, error)
	// Health probes the app; nil means healthy.
	Health(ctx context.Context) error
	// Close releases connections.
	Close() error
}

// WriteFastHTTP copies the app's answer into an HTTP response.
func (r *InvokeResponse) WriteFastHTTP(resp *fasthttp.Response) {
	for _, h := range r.Headers {
		resp.Header.Add(h.Key, h.Value)
	}
	if r.ContentType != "" {
		resp.Header.SetContentType(r.ContentType)
	}
	resp.SetStatusCode(r.Status)
	resp.SetBody(r.Body)
}
