// Package brokerbinding is bindings.mecha: an input and output binding on
// a Kafka-compatible broker (mecha's embedded broker by default, called
// in-process). It shares pubsub.mecha's client, consumer group and record
// mapping (mecha/broker/mechapubsub), so both deliver at least once with
// the same metadata.
package brokerbinding

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"

	"github.com/dapr/components-contrib/bindings"
	"github.com/dapr/components-contrib/metadata"
	"github.com/dapr/kit/logger"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"

	"mecha/broker"
	"mecha/broker/mechapubsub"
)

// ErrOperation is returned by Invoke for an operation other than create.
var ErrOperation = errors.New("unsupported operation")

// Defaults are what the runtime knows and a Component YAML may leave out.
type Defaults struct {
	// Brokers is the embedded broker's "host:port"; empty when it is off
	// (mecha run --broker=false).
	Brokers string
	// Broker is the embedded broker itself, nil when it is off: a binding
	// whose metadata names no other brokers calls it in-process.
	Broker broker.Local
	// Logger receives the logs of the in-process group member; nil
	// discards them.
	Logger *slog.Logger
	// AppID is the consumer group when the metadata names none.
	AppID string
	// SASL is the runtime's own credentials for Brokers
	// (mechapubsub.Defaults.SASL).
	SASL sasl.Mechanism
}

// Binding is bindings.mecha.
//
// Metadata: brokers (comma-separated host:port; default the embedded
// broker, in-process), topics (comma-separated, read by the input side),
// consumerGroup (default the consumerID property, then the app-id; required with topics),
// publishTopic (the output side's default topic), initialOffset (oldest,
// the default, or newest), clientID (default "mecha"), maxMessageBytes,
// publishRetries.
//
// Read delivers each record to the handler and commits it once the
// handler returned nil; an error redelivers it with backoff. Invoke's
// create produces req.Data to the request's topic metadata or
// publishTopic, keyed by the key or partitionKey metadata; other metadata
// entries become headers.
type Binding struct {
	defaults Defaults
	log      logger.Logger

	// mu guards the fields below. Invoke holds it shared for the whole
	// send so that Close never closes the producer under a send.
	mu           sync.RWMutex
	topics       []string
	publishTopic string
	client       *mechapubsub.Client
	group        *mechapubsub.Group // nil without topics
	closed       bool
}

var (
	_ bindings.InputBinding  = (*Binding)(nil)
	_ bindings.OutputBinding = (*Binding)(nil)
)

// New returns an uninitialized bindings.mecha.
func New(l logger.Logger, d Defaults) *Binding {
	if l == nil {
		l = logger.NewLogger("bindings.mecha")
	}
	return &Binding{defaults: d, log: l}
}

// Init parses the metadata and connects to the brokers (in-process: to
// nothing); the consumer group joins when Read is called.
func (b *Binding) Init(ctx context.Context, md bindings.Metadata) error {
	o, err := mechapubsub.ParseClientOptions(md.Properties, mechapubsub.Defaults{Brokers: b.defaults.Brokers, Broker: b.defaults.Broker, Logger: b.defaults.Logger, SASL: b.defaults.SASL})
	if err != nil {
		return fmt.Errorf("bindings.mecha: %w", err)
	}
	var topics []string
	for _, t := range strings.Split(md.Properties["topics"], ",") {
		if t = strings.TrimSpace(t); t != "" {
			topics = append(topics, t)
		}
	}
	var g *mechapubsub.Group
	if len(topics) > 0 {
		if o.ConsumerGroup == "" {
			o.ConsumerGroup = b.defaults.AppID
		}
		if o.ConsumerGroup == "" {
			return fmt.Errorf("bindings.mecha: %w", &mechapubsub.MetadataError{Field: "consumerGroup", Problem: "required to read topics (or set consumerID)"})
		}
		if g, err = mechapubsub.NewGroup(o, b.log); err != nil {
			return fmt.Errorf("bindings.mecha: %w", err)
		}
	}
	c, err := mechapubsub.NewClient(ctx, o)
	if err != nil {
		return fmt.Errorf("bindings.mecha: %w", err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.topics, b.publishTopic, b.client, b.group = topics, strings.TrimSpace(md.Properties["publishTopic"]), c, g
	return nil
}

// Read starts consuming the topics in the consumer group and returns at
// once; delivery stops when ctx ends.
func (b *Binding) Read(ctx context.Context, handler bindings.Handler) error {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if err := b.usable(); err != nil {
		return err
	}
	if b.group == nil {
		return fmt.Errorf("bindings.mecha: read: %w", &mechapubsub.MetadataError{Field: "topics", Problem: "not set, so there is nothing to read"})
	}
	h := func(ctx context.Context, r *kgo.Record) error {
		_, err := handler(ctx, &bindings.ReadResponse{Data: r.Value, Metadata: mechapubsub.RecordMetadata(r)})
		return err
	}
	for _, t := range b.topics {
		if err := b.group.Subscribe(ctx, t, h); err != nil {
			return fmt.Errorf("bindings.mecha: read %s: %w", t, err)
		}
	}
	return nil
}

// Operations implements bindings.OutputBinding: create.
func (b *Binding) Operations() []bindings.OperationKind {
	return []bindings.OperationKind{bindings.CreateOperation}
}

// Invoke produces req.Data (operation create) and answers with the
// record's topic, partition and offset.
func (b *Binding) Invoke(ctx context.Context, req *bindings.InvokeRequest) (*bindings.InvokeResponse, error) {
	if req.Operation != bindings.CreateOperation {
		return nil, fmt.Errorf("bindings.mecha: %w %q: the supported operation is %q", ErrOperation, req.Operation, bindings.CreateOperation)
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	if err := b.usable(); err != nil {
		return nil, err
	}
	topic := b.publishTopic
	md := make(map[string]string, len(req.Metadata))
	for k, v := range req.Metadata {
		if k == "topic" {
			topic = v
			continue
		}
		md[k] = v
	}
	if topic == "" {
		return nil, errors.New("bindings.mecha: create: no topic: set publishTopic in the component metadata or topic in the request metadata")
	}
	r := mechapubsub.NewRecord(topic, req.Data, md)
	if err := b.client.Produce(ctx, r).FirstErr(); err != nil {
		return nil, fmt.Errorf("bindings.mecha: create on %s: %w", topic, err)
	}
	return &bindings.InvokeResponse{Metadata: map[string]string{
		"topic":     topic,
		"partition": strconv.FormatInt(int64(r.Partition), 10),
		"offset":    strconv.FormatInt(r.Offset, 10),
	}}, nil
}

// Close stops reading (committing what was handled), leaves the group and
// closes the client.
func (b *Binding) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	g := b.group
	b.mu.Unlock()
	// Without mu: a handler under way may be invoking this binding.
	var errs []error
	if g != nil {
		errs = append(errs, g.Close())
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.client != nil {
		b.client.Close()
	}
	return errors.Join(errs...)
}

// usable reports why the binding cannot be used, if it cannot. The
// caller holds mu.
func (b *Binding) usable() error {
	switch {
	case b.closed:
		return fmt.Errorf("bindings.mecha: %w", mechapubsub.ErrClosed)
	case b.client == nil:
		return errors.New("bindings.mecha: not initialized")
	}
	return nil
}

// GetComponentMetadata describes the metadata fields.
func (b *Binding) GetComponentMetadata() metadata.MetadataMap {
	return metadata.MetadataMap{
		"brokers":         {Type: "string"},
		"topics":          {Type: "string"},
		"consumerGroup":   {Type: "string"},
		"publishTopic":    {Type: "string"},
		"clientID":        {Type: "string"},
		"initialOffset":   {Type: "string"},
		"maxMessageBytes": {Type: "int"},
		"publishRetries":  {Type: "int"},
	}
}
