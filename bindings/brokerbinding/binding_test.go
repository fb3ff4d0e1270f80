package brokerbinding_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dapr/components-contrib/bindings"
	"github.com/dapr/components-contrib/metadata"
	"github.com/dapr/kit/logger"

	"mecha/bindings/brokerbinding"
	"mecha/broker"
	"mecha/broker/brokertest"
	"mecha/broker/mechapubsub"
	"mecha/internal/poll"
)

const waitLong = 20 * time.Second

func testLogger() logger.Logger {
	l := logger.NewLogger("brokerbinding-test")
	l.SetOutputLevel(logger.WarnLevel)
	return l
}

// env is a test's broker and the way the binding reaches it: in-process
// (the default of mecha run) or over the network.
type env struct {
	b     *broker.Broker
	local bool
}

func (e env) defaults() brokerbinding.Defaults {
	if e.local {
		return brokerbinding.Defaults{Brokers: e.b.Addr(), Broker: e.b}
	}
	return brokerbinding.Defaults{Brokers: e.b.Addr()}
}

// eachWay runs test in-process and over the network (brokertest.EachWay).
func eachWay(t *testing.T, test func(t *testing.T, e env)) {
	brokertest.EachWay(t, func(t *testing.T, b *broker.Broker, local bool) { test(t, env{b: b, local: local}) })
}

func newBinding(t *testing.T, e env, props map[string]string) *brokerbinding.Binding {
	t.Helper()
	b := brokerbinding.New(testLogger(), e.defaults())
	if err := b.Init(t.Context(), bindings.Metadata{Base: metadata.Base{Name: "events", Properties: props}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// reader records what the input side delivered.
type reader struct {
	mu   sync.Mutex
	got  []*bindings.ReadResponse
	fail func(r *bindings.ReadResponse, attempt int) error
}

func (r *reader) handler(_ context.Context, resp *bindings.ReadResponse) ([]byte, error) {
	r.mu.Lock()
	attempt := 1
	for _, prev := range r.got {
		if string(prev.Data) == string(resp.Data) {
			attempt++
		}
	}
	r.got = append(r.got, resp)
	fail := r.fail
	r.mu.Unlock()
	if fail != nil {
		return nil, fail(resp, attempt)
	}
	return nil, nil
}

func (r *reader) data() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, len(r.got))
	for i, g := range r.got {
		out[i] = string(g.Data)
	}
	return out
}

func (r *reader) find(d string) *bindings.ReadResponse {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, g := range r.got {
		if string(g.Data) == d {
			return g
		}
	}
	return nil
}

func create(t *testing.T, b *brokerbinding.Binding, data string, md map[string]string) *bindings.InvokeResponse {
	t.Helper()
	resp, err := b.Invoke(t.Context(), &bindings.InvokeRequest{Operation: bindings.CreateOperation, Data: []byte(data), Metadata: md})
	if err != nil {
		t.Fatalf("create %s: %v", data, err)
	}
	return resp
}

func TestReadInvokeRoundTrip(t *testing.T) {
	eachWay(t, func(t *testing.T, e env) {
		b := newBinding(t, e, map[string]string{"topics": "in1, in2", "consumerGroup": "reader", "publishTopic": "in1"})
		if ops := b.Operations(); !slices.Equal(ops, []bindings.OperationKind{bindings.CreateOperation}) {
			t.Errorf("Operations = %v, want [create]", ops)
		}
		r := &reader{}
		start := time.Now()
		if err := b.Read(t.Context(), r.handler); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("Read took %s; it must return at once", d)
		}
		resp := create(t, b, "to-default", map[string]string{"key": "k1", "source": "test"})
		if resp.Metadata["topic"] != "in1" || resp.Metadata["offset"] == "" || resp.Metadata["partition"] == "" {
			t.Errorf("Invoke response metadata = %v", resp.Metadata)
		}
		create(t, b, "to-override", map[string]string{"topic": "in2", "partitionKey": "k2"})
		poll.Until(t, waitLong, "both records", func() bool { return r.find("to-default") != nil && r.find("to-override") != nil })

		m := r.find("to-default").Metadata
		for k, want := range map[string]string{"__topic": "in1", "__key": "k1", "source": "test", "__partition": resp.Metadata["partition"], "__offset": resp.Metadata["offset"]} {
			if m[k] != want {
				t.Errorf("to-default metadata %s = %q, want %q (all %v)", k, m[k], want, m)
			}
		}
		m2 := r.find("to-override").Metadata
		if m2["__topic"] != "in2" || m2["__key"] != "k2" {
			t.Errorf("to-override metadata = %v, want topic in2 and key k2", m2)
		}
		if _, ok := m2["topic"]; ok {
			t.Errorf("the topic request metadata became a header: %v", m2)
		}
		if got := r.data(); len(got) != 2 {
			t.Errorf("deliveries %v, want each record once", got)
		}
	})
}

func TestReadRetriesUntilHandled(t *testing.T) {
	eachWay(t, func(t *testing.T, e env) {
		props := map[string]string{"topics": "work", "consumerID": "worker", "publishTopic": "work"}
		b := newBinding(t, e, props)
		r := &reader{fail: func(resp *bindings.ReadResponse, attempt int) error {
			if string(resp.Data) == "flaky" && attempt < 3 {
				return fmt.Errorf("attempt %d fails", attempt)
			}
			return nil
		}}
		if err := b.Read(t.Context(), r.handler); err != nil {
			t.Fatal(err)
		}
		create(t, b, "flaky", map[string]string{"key": "same"})
		create(t, b, "next", map[string]string{"key": "same"})
		poll.Until(t, waitLong, "next after flaky was handled", func() bool { return r.find("next") != nil })
		if got, want := r.data(), []string{"flaky", "flaky", "flaky", "next"}; !slices.Equal(got, want) {
			t.Fatalf("deliveries = %v, want %v", got, want)
		}
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}

		// Handled records are committed: a new binding in the group gets only
		// what comes after them.
		b2 := newBinding(t, e, props)
		r2 := &reader{}
		if err := b2.Read(t.Context(), r2.handler); err != nil {
			t.Fatal(err)
		}
		create(t, b2, "later", map[string]string{"key": "same"})
		poll.Until(t, waitLong, "the later record", func() bool { return r2.find("later") != nil })
		if got := r2.data(); !slices.Equal(got, []string{"later"}) {
			t.Errorf("new binding read %v, want [later]", got)
		}
	})
}

func TestReadStopsWithContext(t *testing.T) {
	eachWay(t, func(t *testing.T, e env) {
		b := newBinding(t, e, map[string]string{"topics": "t", "consumerGroup": "g", "publishTopic": "t"})
		r := &reader{}
		ctx, cancel := context.WithCancel(t.Context())
		if err := b.Read(ctx, r.handler); err != nil {
			t.Fatal(err)
		}
		create(t, b, "first", nil)
		poll.Until(t, waitLong, "the first record", func() bool { return r.find("first") != nil })
		cancel()
		create(t, b, "second", nil)
		// A new Read on the same binding picks up what the stopped one left.
		r2 := &reader{}
		if err := b.Read(t.Context(), r2.handler); err != nil {
			t.Fatal(err)
		}
		poll.Until(t, waitLong, "the second record on the new reader", func() bool { return r2.find("second") != nil })
		if r.find("second") != nil {
			t.Error("the cancelled reader got a record")
		}
	})
}

func TestInvokeErrors(t *testing.T) {
	eachWay(t, func(t *testing.T, e env) {
		b := newBinding(t, e, nil)
		_, err := b.Invoke(t.Context(), &bindings.InvokeRequest{Operation: "delete", Data: []byte("x"), Metadata: map[string]string{"topic": "t"}})
		if !errors.Is(err, brokerbinding.ErrOperation) || !strings.Contains(err.Error(), `"delete"`) || !strings.Contains(err.Error(), "create") {
			t.Errorf("unknown operation: %v, want ErrOperation naming delete and create", err)
		}
		_, err = b.Invoke(t.Context(), &bindings.InvokeRequest{Operation: bindings.CreateOperation, Data: []byte("x")})
		if err == nil || !strings.Contains(err.Error(), "publishTopic") {
			t.Errorf("create without a topic: %v, want an error naming publishTopic", err)
		}
		if err := b.Read(t.Context(), (&reader{}).handler); err == nil || !strings.Contains(err.Error(), "topics") {
			t.Errorf("Read without topics: %v, want an error naming topics", err)
		}
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := b.Invoke(t.Context(), &bindings.InvokeRequest{Operation: bindings.CreateOperation, Metadata: map[string]string{"topic": "t"}}); !errors.Is(err, mechapubsub.ErrClosed) {
			t.Errorf("Invoke after Close: %v, want ErrClosed", err)
		}
	})
}

func TestInitMetadataErrors(t *testing.T) {
	brokers := brokertest.Start(t)
	for _, tc := range []struct {
		name     string
		defaults string
		props    map[string]string
		want     []string
	}{
		{"no brokers", "", map[string]string{"publishTopic": "t"}, []string{"metadata brokers", "--broker=false"}},
		{"topics without group", brokers, map[string]string{"topics": "a"}, []string{"metadata consumerGroup"}},
		{"initialOffset", brokers, map[string]string{"topics": "a", "consumerGroup": "g", "initialOffset": "latest"}, []string{`metadata initialOffset: want "oldest" or "newest", got "latest"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := brokerbinding.New(testLogger(), brokerbinding.Defaults{Brokers: tc.defaults})
			err := b.Init(t.Context(), bindings.Metadata{Base: metadata.Base{Properties: tc.props}})
			if err == nil {
				_ = b.Close()
				t.Fatal("Init succeeded")
			}
			if !errors.Is(err, mechapubsub.ErrMetadata) {
				t.Errorf("error %v is not ErrMetadata", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}
