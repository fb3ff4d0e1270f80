// Command grpcapp is the gRPC app (Dapr AppCallback) the end-to-end tests
// run behind `mecha run --app-protocol grpc`. It records what it receives
// and serves the record over a small HTTP side port.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync"

	commonv1pb "github.com/dapr/dapr/pkg/proto/common/v1"
	runtimev1pb "github.com/dapr/dapr/pkg/proto/runtime/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/emptypb"
)

type event struct {
	Kind  string `json:"kind"`
	Path  string `json:"path"`
	ID    string `json:"id"`
	Topic string `json:"topic"`
	Data  string `json:"data"`
}

type app struct {
	runtimev1pb.UnimplementedAppCallbackServer
	runtimev1pb.UnimplementedAppCallbackHealthCheckServer
	mu       sync.Mutex
	events   []event
	attempts map[string]int
}

func (a *app) add(e event) {
	a.mu.Lock()
	a.events = append(a.events, e)
	a.mu.Unlock()
}

func (a *app) OnInvoke(_ context.Context, in *commonv1pb.InvokeRequest) (*commonv1pb.InvokeResponse, error) {
	out, _ := json.Marshal(map[string]string{
		"method": in.GetMethod(), "verb": in.GetHttpExtension().GetVerb().String(),
		"query": in.GetHttpExtension().GetQuerystring(), "data": string(in.GetData().GetValue()),
		"contentType": in.GetContentType(),
	})
	return &commonv1pb.InvokeResponse{Data: &anypb.Any{Value: out}, ContentType: "application/json"}, nil
}

func (a *app) ListTopicSubscriptions(context.Context, *emptypb.Empty) (*runtimev1pb.ListTopicSubscriptionsResponse, error) {
	return &runtimev1pb.ListTopicSubscriptionsResponse{Subscriptions: []*runtimev1pb.TopicSubscription{
		{PubsubName: "pubsub", Topic: "orders", Routes: &runtimev1pb.TopicRoutes{Default: "/orders"}},
		{PubsubName: "pubsub", Topic: "retry-topic", Routes: &runtimev1pb.TopicRoutes{Default: "/retry"}},
	}}, nil
}

func (a *app) OnTopicEvent(_ context.Context, in *runtimev1pb.TopicEventRequest) (*runtimev1pb.TopicEventResponse, error) {
	a.add(event{Kind: "topic", Path: in.GetPath(), ID: in.GetId(), Topic: in.GetTopic(), Data: string(in.GetData())})
	if in.GetPath() == "/retry" {
		a.mu.Lock()
		a.attempts[in.GetId()]++
		n := a.attempts[in.GetId()]
		a.mu.Unlock()
		if n == 1 {
			return &runtimev1pb.TopicEventResponse{Status: runtimev1pb.TopicEventResponse_RETRY}, nil
		}
	}
	return &runtimev1pb.TopicEventResponse{Status: runtimev1pb.TopicEventResponse_SUCCESS}, nil
}

func (a *app) ListInputBindings(context.Context, *emptypb.Empty) (*runtimev1pb.ListInputBindingsResponse, error) {
	return &runtimev1pb.ListInputBindingsResponse{Bindings: []string{"mybinding"}}, nil
}

func (a *app) OnBindingEvent(_ context.Context, in *runtimev1pb.BindingEventRequest) (*runtimev1pb.BindingEventResponse, error) {
	a.add(event{Kind: "binding", Path: in.GetName(), Data: string(in.GetData())})
	return &runtimev1pb.BindingEventResponse{}, nil
}

func (a *app) HealthCheck(context.Context, *emptypb.Empty) (*runtimev1pb.HealthCheckResponse, error) {
	return &runtimev1pb.HealthCheckResponse{}, nil
}

func main() {
	a := &app{attempts: map[string]int{}}
	glis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	hlis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	s := grpc.NewServer()
	// A service of the app's own, for Dapr-style gRPC proxying tests.
	healthpb.RegisterHealthServer(s, health.NewServer())
	runtimev1pb.RegisterAppCallbackServer(s, a)
	runtimev1pb.RegisterAppCallbackHealthCheckServer(s, a)
	go func() {
		http.HandleFunc("/received", func(w http.ResponseWriter, r *http.Request) {
			a.mu.Lock()
			defer a.mu.Unlock()
			out := []event{}
			for _, e := range a.events {
				if p := r.URL.Query().Get("path"); p == "" || p == e.Path {
					out = append(out, e)
				}
			}
			_ = json.NewEncoder(w).Encode(out)
		})
		_ = http.Serve(hlis, nil)
	}()
	fmt.Printf("LISTENING %d %d\n", glis.Addr().(*net.TCPAddr).Port, hlis.Addr().(*net.TCPAddr).Port)
	if err := s.Serve(glis); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
