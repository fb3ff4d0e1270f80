// Package mechapubsub is pubsub.mecha: a components-contrib pubsub.PubSub
// on a Kafka-compatible broker, mecha's embedded broker by default. When
// that broker is in this process (Defaults.Broker, and the metadata names
// no other brokers) the component calls it in-process (broker/inproc):
// publish and fetch without a socket, and the subscriber a member of the
// broker's consumer group like any Kafka client. Over the network it is
// a franz-go client. It also exports the pieces bindings.mecha shares:
// metadata parsing (ClientOptions), the dynamic consumer Group, and the
// record mapping (NewRecord, RecordMetadata).
//
// Delivery is at least once: a record's offset is committed only after
// the handler returned nil; a handler error redelivers the same record
// with backoff (100 ms doubling to 5 s), holding back the rest of its
// partition.
package mechapubsub

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/dapr/components-contrib/metadata"
	"github.com/dapr/components-contrib/pubsub"
	"github.com/dapr/kit/logger"
	"github.com/twmb/franz-go/pkg/kgo"
)

// PubSub is pubsub.mecha.
//
// Metadata (all optional): brokers (comma-separated host:port; default the
// embedded broker, in-process), consumerGroup (default the runtime's consumerID, the
// app-id), clientID (default "mecha"), initialOffset (oldest, the
// default, or newest), maxMessageBytes, publishRetries.
type PubSub struct {
	defaults Defaults
	log      logger.Logger

	// mu guards the fields below. Publish holds it shared for the whole
	// send so that Close never closes the producer under a send.
	mu     sync.RWMutex
	opts   ClientOptions
	client *Client
	group  *Group // nil without a consumer group
	closed bool
}

var (
	_ pubsub.PubSub        = (*PubSub)(nil)
	_ pubsub.BulkPublisher = (*PubSub)(nil)
)

// New returns an uninitialized pubsub.mecha.
func New(l logger.Logger, d Defaults) pubsub.PubSub {
	if l == nil {
		l = logger.NewLogger("pubsub.mecha")
	}
	return &PubSub{defaults: d, log: l}
}

// Init parses the metadata and connects to the brokers (in-process: to
// nothing); the consumer group joins on the first Subscribe.
func (p *PubSub) Init(ctx context.Context, md pubsub.Metadata) error {
	o, err := ParseClientOptions(md.Properties, p.defaults)
	if err != nil {
		return fmt.Errorf("pubsub.mecha: %w", err)
	}
	c, err := NewClient(ctx, o)
	if err != nil {
		return fmt.Errorf("pubsub.mecha: %w", err)
	}
	var g *Group
	if o.ConsumerGroup != "" {
		g, _ = NewGroup(o, p.log)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.opts, p.client, p.group = o, c, g
	return nil
}

// Features implements pubsub.PubSub: none of the optional features.
func (p *PubSub) Features() []pubsub.Feature { return nil }

// Publish produces req.Data to req.Topic and waits for all in-sync
// replicas (in-process: for the broker's log, fsynced when the broker
// fsyncs every write). The record key comes from the metadata
// partitionKey or key; every other metadata entry becomes a header.
func (p *PubSub) Publish(ctx context.Context, req *pubsub.PublishRequest) error {
	if err := CheckTopic(req.Topic); err != nil {
		return fmt.Errorf("pubsub.mecha: publish: %w", err)
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	if err := p.usable(); err != nil {
		return err
	}
	if err := p.client.Produce(ctx, NewRecord(req.Topic, req.Data, req.Metadata)).FirstErr(); err != nil {
		return fmt.Errorf("pubsub.mecha: publish to %s: %w", req.Topic, p.produceError(req.Topic, err))
	}
	return nil
}

// BulkPublish produces every entry in one batch and lists those that
// failed. An entry's metadata overrides the request's.
func (p *PubSub) BulkPublish(ctx context.Context, req *pubsub.BulkPublishRequest) (pubsub.BulkPublishResponse, error) {
	if err := CheckTopic(req.Topic); err != nil {
		err = fmt.Errorf("pubsub.mecha: bulk publish: %w", err)
		return pubsub.NewBulkPublishResponse(req.Entries, err), err
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	if err := p.usable(); err != nil {
		return pubsub.NewBulkPublishResponse(req.Entries, err), err
	}
	recs := make([]*kgo.Record, len(req.Entries))
	for i, e := range req.Entries {
		md := make(map[string]string, len(req.Metadata)+len(e.Metadata))
		for k, v := range req.Metadata {
			md[k] = v
		}
		for k, v := range e.Metadata {
			md[k] = v
		}
		recs[i] = NewRecord(req.Topic, e.Event, md)
	}
	var resp pubsub.BulkPublishResponse
	var first error
	for i, r := range p.client.Produce(ctx, recs...) {
		if r.Err != nil {
			r.Err = p.produceError(req.Topic, r.Err)
			resp.FailedEntries = append(resp.FailedEntries, pubsub.BulkPublishResponseFailedEntry{EntryId: req.Entries[i].EntryId, Error: r.Err})
			if first == nil {
				first = r.Err
			}
		}
	}
	if first == nil {
		return pubsub.BulkPublishResponse{}, nil
	}
	return resp, fmt.Errorf("pubsub.mecha: bulk publish to %s: %d of %d entries failed, first: %w", req.Topic, len(resp.FailedEntries), len(recs), first)
}

// Subscribe adds req.Topic to the component's consumer group and returns
// at once. handler returning nil commits the record; an error redelivers
// it. Delivery to this handler stops when ctx ends.
func (p *PubSub) Subscribe(ctx context.Context, req pubsub.SubscribeRequest, handler pubsub.Handler) error {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if err := p.usable(); err != nil {
		return err
	}
	if p.group == nil {
		return fmt.Errorf("pubsub.mecha: subscribe: %w", &MetadataError{"consumerGroup", "not set, and the runtime gave no consumerID"})
	}
	err := p.group.Subscribe(ctx, req.Topic, func(ctx context.Context, r *kgo.Record) error {
		return handler(ctx, &pubsub.NewMessage{Data: r.Value, Topic: r.Topic, Metadata: RecordMetadata(r)})
	})
	if err != nil {
		return fmt.Errorf("pubsub.mecha: subscribe to %s: %w", req.Topic, err)
	}
	return nil
}

// Close stops every subscription (committing what was handled), leaves
// the group and closes the client.
func (p *PubSub) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	g := p.group
	p.mu.Unlock()
	// The group is closed without holding mu: a handler under way may be
	// publishing on this component (dead letters), and must get ErrClosed
	// rather than wait for Close.
	var errs []error
	if g != nil {
		errs = append(errs, g.Close())
	}
	// Taking mu waits for sends that started before closed was set.
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.client != nil {
		p.client.Close()
	}
	return errors.Join(errs...)
}

// usable reports why the component cannot be used, if it cannot. The
// caller holds mu.
func (p *PubSub) usable() error {
	switch {
	case p.closed:
		return fmt.Errorf("pubsub.mecha: %w", ErrClosed)
	case p.client == nil:
		return errors.New("pubsub.mecha: not initialized")
	}
	return nil
}

// GetComponentMetadata describes the metadata fields.
func (p *PubSub) GetComponentMetadata() metadata.MetadataMap {
	return metadata.MetadataMap{
		"brokers":         {Type: "string"},
		"consumerGroup":   {Type: "string"},
		"clientID":        {Type: "string"},
		"initialOffset":   {Type: "string"},
		"maxMessageBytes": {Type: "int"},
		"publishRetries":  {Type: "int"},
	}
}
