// Package kfaketest starts kfake, franz-go's in-memory Kafka broker, as a
// stand-in for a Kafka-compatible broker in tests of sarama clients.
//
// kfake departs from Kafka in one answer that sarama depends on: for a
// partition with no committed offset, OffsetFetch returns a null metadata
// string, where Kafka returns "" (OffsetFetchResponse.NO_METADATA).
// sarama decodes that field as a non-nullable compact string from v6 on
// (Kafka version 2.4 and later) and fails the whole session with "invalid
// byteslice length". NewCluster therefore serves kfake through a
// connection wrapper that rewrites those nulls to "", as Kafka sends them.
package kfaketest

import (
	"encoding/binary"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// NewCluster starts a one-broker kfake on 127.0.0.1 with auto-created
// topics of three partitions (opts may override), closed when the test
// ends, and returns its "host:port".
func NewCluster(tb testing.TB, opts ...kfake.Opt) string {
	tb.Helper()
	base := []kfake.Opt{
		kfake.NumBrokers(1),
		kfake.AllowAutoTopicCreation(),
		kfake.DefaultNumPartitions(3),
		kfake.ListenFn(func(network, address string) (net.Listener, error) {
			l, err := net.Listen(network, address)
			if err != nil {
				return nil, err
			}
			return listener{l}, nil
		}),
	}
	c, err := kfake.NewCluster(append(base, opts...)...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(c.Close)
	return strings.Join(c.ListenAddrs(), ",")
}

type listener struct{ net.Listener }

func (l listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &conn{Conn: c, reqs: map[int32]apiVersion{}}, nil
}

type apiVersion struct{ key, version int16 }

// conn notes the API key and version of each request kfake reads, by
// correlation ID, and rewrites the OffsetFetch responses kfake writes.
// kfake writes each response as one complete frame.
type conn struct {
	net.Conn

	// mu guards the fields below: kfake reads and writes a connection
	// from different goroutines.
	mu   sync.Mutex
	in   []byte // request bytes not yet framed
	reqs map[int32]apiVersion
}

func (c *conn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.observe(p[:n])
	}
	return n, err
}

func (c *conn) observe(b []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.in = append(c.in, b...)
	for len(c.in) >= 4 {
		size := int(binary.BigEndian.Uint32(c.in))
		if len(c.in) < 4+size {
			return
		}
		if f := c.in[4 : 4+size]; len(f) >= 8 {
			corr := int32(binary.BigEndian.Uint32(f[4:]))
			c.reqs[corr] = apiVersion{int16(binary.BigEndian.Uint16(f)), int16(binary.BigEndian.Uint16(f[2:]))}
		}
		c.in = append(c.in[:0], c.in[4+size:]...)
	}
}

func (c *conn) Write(p []byte) (int, error) {
	if len(p) < 8 {
		return c.Conn.Write(p)
	}
	corr := int32(binary.BigEndian.Uint32(p[4:]))
	c.mu.Lock()
	req, ok := c.reqs[corr]
	delete(c.reqs, corr)
	c.mu.Unlock()
	if ok && req.key == int16(kmsg.OffsetFetch) {
		if fixed, ok := fixOffsetFetch(p, req.version); ok {
			if _, err := c.Conn.Write(fixed); err != nil {
				return 0, err
			}
			return len(p), nil
		}
	}
	return c.Conn.Write(p)
}

// fixOffsetFetch returns frame with null partition metadata made "", and
// false when there was nothing to change.
func fixOffsetFetch(frame []byte, version int16) ([]byte, bool) {
	resp := kmsg.NewPtrOffsetFetchResponse()
	resp.Version = version
	hdr := 8 // size, correlation ID
	if resp.IsFlexible() {
		hdr++ // empty tagged fields
	}
	if err := resp.ReadFrom(frame[hdr:]); err != nil {
		return nil, false
	}
	empty := ""
	changed := false
	for i := range resp.Topics {
		for j := range resp.Topics[i].Partitions {
			if p := &resp.Topics[i].Partitions[j]; p.Metadata == nil {
				p.Metadata, changed = &empty, true
			}
		}
	}
	for g := range resp.Groups {
		for i := range resp.Groups[g].Topics {
			for j := range resp.Groups[g].Topics[i].Partitions {
				if p := &resp.Groups[g].Topics[i].Partitions[j]; p.Metadata == nil {
					p.Metadata, changed = &empty, true
				}
			}
		}
	}
	if !changed {
		return nil, false
	}
	out := resp.AppendTo(append([]byte(nil), frame[:hdr]...))
	binary.BigEndian.PutUint32(out, uint32(len(out)-4))
	return out, true
}
