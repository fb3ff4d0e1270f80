package mechapubsub

import (
	"context"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"mecha/broker/inproc"
)

// Client is a component's way to its broker: in-process when the broker
// is in this process (ClientOptions.Local), else franz-go over the
// network. Either way a produce answers once the records are in the log
// (acks=all), with one result per record. pubsub.mecha and bindings.mecha
// both produce through it.
type Client struct {
	local  *inproc.Client // nil over the network
	remote *kgo.Client    // nil in-process
}

// NewClient connects to o's brokers, and checks that one answers, so that
// a wrong address fails Init; in-process there is nothing to connect.
func NewClient(ctx context.Context, o ClientOptions) (*Client, error) {
	if o.Local != nil {
		return &Client{local: inproc.New(o.Local, inproc.Options{ClientID: o.ClientID, Partitioner: partitioner(), MaxRecordBytes: o.MaxMessageBytes})}, nil
	}
	cl, err := kgo.NewClient(o.kgoOpts()...)
	if err != nil {
		return nil, fmt.Errorf("connecting to %v: %w", o.Brokers, err)
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := cl.Ping(pctx); err != nil {
		cl.Close()
		return nil, fmt.Errorf("connecting to %v: %w", o.Brokers, err)
	}
	return &Client{remote: cl}, nil
}

// Produce writes recs and waits for each; a record's Partition and, on
// success, Offset are set. The results are in the order of recs.
func (c *Client) Produce(ctx context.Context, recs ...*kgo.Record) kgo.ProduceResults {
	if c.local != nil {
		return c.local.ProduceSync(ctx, recs...)
	}
	// franz-go answers in the order the records completed.
	done := c.remote.ProduceSync(ctx, recs...)
	if len(done) < 2 {
		return done
	}
	at := make(map[*kgo.Record]int, len(recs))
	for i, r := range recs {
		at[r] = i
	}
	out := make(kgo.ProduceResults, len(recs))
	for _, res := range done {
		out[at[res.Record]] = res
	}
	return out
}

// Close closes the network client; in-process there is nothing to close.
func (c *Client) Close() {
	if c.remote != nil {
		c.remote.Close()
	}
}
