// Command grpcapi measures mecha's gRPC API against its HTTP API in one
// run, as Dapr SDK users meet them: the gRPC API driven by the official
// Dapr Go SDK from -conns goroutines, the HTTP API by wrk with -conns
// connections; GetState, SaveState, PublishEvent and InvokeService to a
// local app each way, and events delivered to an HTTP app, to a gRPC app
// and over a streaming subscription, through the embedded broker (the
// default pubsub). It reports calls/s and the runtime's CPU µs per call
// (from /proc/<pid>/stat), medians of -rounds interleaved rounds.
//
//	go run ./bench/grpcapi -duration 8s -rounds 3
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	commonv1pb "github.com/dapr/dapr/pkg/proto/common/v1"
	runtimev1pb "github.com/dapr/dapr/pkg/proto/runtime/v1"
	dapr "github.com/dapr/go-sdk/client"
	"github.com/dapr/go-sdk/service/common"
	"github.com/valyala/fasthttp"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/emptypb"

	"mecha/internal/procstat"
)

func main() {
	duration := flag.Duration("duration", 8*time.Second, "length of one measure")
	rounds := flag.Int("rounds", 3, "interleaved rounds; the median is reported")
	conns := flag.Int("conns", 16, "wrk connections and SDK goroutines")
	mechaBin := flag.String("mecha", "", "the mecha binary (default: built from ./cmd/mecha)")
	flag.Parse()
	if err := run(*duration, *rounds, *conns, *mechaBin); err != nil {
		fmt.Fprintln(os.Stderr, "grpcapi:", err)
		os.Exit(1)
	}
}

// httpApp is the HTTP app: "ok" to every call, and a count of the
// events of topic http-events.
type httpApp struct{ events atomic.Int64 }

func (a *httpApp) handle(ctx *fasthttp.RequestCtx) {
	switch string(ctx.Path()) {
	case "/dapr/subscribe":
		ctx.SetContentType("application/json")
		ctx.SetBodyString(`[{"pubsubname":"pubsub","topic":"http-events","route":"/events"}]`)
	case "/events":
		a.events.Add(1)
		ctx.SetContentType("application/json")
		ctx.SetBodyString(`{"status":"SUCCESS"}`)
	default:
		ctx.SetBodyString("ok")
	}
}

// grpcApp is the gRPC app (AppCallback): "ok" to every call, and a count
// of the events of topic grpc-events.
type grpcApp struct {
	runtimev1pb.UnimplementedAppCallbackServer
	events atomic.Int64
}

func (a *grpcApp) OnInvoke(context.Context, *commonv1pb.InvokeRequest) (*commonv1pb.InvokeResponse, error) {
	return &commonv1pb.InvokeResponse{Data: &anypb.Any{Value: []byte("ok")}, ContentType: "text/plain"}, nil
}

func (a *grpcApp) ListTopicSubscriptions(context.Context, *emptypb.Empty) (*runtimev1pb.ListTopicSubscriptionsResponse, error) {
	return &runtimev1pb.ListTopicSubscriptionsResponse{Subscriptions: []*runtimev1pb.TopicSubscription{{PubsubName: "pubsub", Topic: "grpc-events"}}}, nil
}

func (a *grpcApp) OnTopicEvent(context.Context, *runtimev1pb.TopicEventRequest) (*runtimev1pb.TopicEventResponse, error) {
	a.events.Add(1)
	return &runtimev1pb.TopicEventResponse{Status: runtimev1pb.TopicEventResponse_SUCCESS}, nil
}

func listen() (net.Listener, int) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	return l, l.Addr().(*net.TCPAddr).Port
}

// cpuOf is the CPU time process pid has used so far.
func cpuOf(pid int) time.Duration {
	cpu, _, _, _ := procstat.Of(pid)
	return cpu
}

type result struct {
	rate  float64 // calls (or events) per second
	cpuUs float64 // runtime CPU µs per call
}

func run(duration time.Duration, rounds, conns int, mechaBin string) error {
	if _, err := exec.LookPath("wrk"); err != nil {
		return errors.New("wrk is needed: apt-get install -y wrk")
	}
	work, err := os.MkdirTemp("", "grpcapi-bench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	if mechaBin == "" {
		mechaBin = filepath.Join(work, "mecha")
		if out, err := exec.Command("go", "build", "-o", mechaBin, "./cmd/mecha").CombinedOutput(); err != nil {
			return fmt.Errorf("building mecha: %v\n%s", err, out)
		}
	}
	ha := &httpApp{}
	hl, hport := listen()
	go func() { _ = fasthttp.Serve(hl, ha.handle) }()
	ga := &grpcApp{}
	gl, gport := listen()
	gs := grpc.NewServer()
	runtimev1pb.RegisterAppCallbackServer(gs, ga)
	go func() { _ = gs.Serve(gl) }()
	defer gs.Stop()

	cmd := exec.Command(mechaBin, "run", "--app-id", "httpapp", "--app-port", strconv.Itoa(hport),
		"--app", fmt.Sprintf("id=grpcapp,port=%d,protocol=grpc", gport),
		"--dapr-http-port", "0", "--dapr-grpc-port", "0", "--metrics-port", "0", "--internal-port", "0", "--gossip-port", "0",
		"--broker-port", "0", "--log-level", "info", "--data-dir", filepath.Join(work, "data"), "--enable-profiling")
	stderr, _ := cmd.StderrPipe()
	cmd.Stdout = os.Stdout
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	apiRE := regexp.MustCompile(`msg="API listening".* http_port=(\d+) grpc_port=(\d+) metrics_port=(\d+)`)
	hostedRE := regexp.MustCompile(`msg="app API listening".* app=grpcapp http_port=(\d+) grpc_port=(\d+)`)
	var httpPort, grpcPort, gHTTPPort, metricsPort int
	sc := bufio.NewScanner(stderr)
	for sc.Scan() && (httpPort == 0 || gHTTPPort == 0) {
		if m := apiRE.FindStringSubmatch(sc.Text()); m != nil {
			httpPort, _ = strconv.Atoi(m[1])
			grpcPort, _ = strconv.Atoi(m[2])
			metricsPort, _ = strconv.Atoi(m[3])
		}
		if m := hostedRE.FindStringSubmatch(sc.Text()); m != nil {
			gHTTPPort, _ = strconv.Atoi(m[1])
		}
	}
	go func() {
		for sc.Scan() {
			if os.Getenv("BENCH_LOG") != "" {
				fmt.Fprintln(os.Stderr, sc.Text())
			}
		}
	}()
	if httpPort == 0 || gHTTPPort == 0 {
		return errors.New("mecha did not start")
	}
	pid := cmd.Process.Pid
	base := fmt.Sprintf("http://127.0.0.1:%d", httpPort)
	waitHealthy(base)
	waitHealthy(fmt.Sprintf("http://127.0.0.1:%d", gHTTPPort))

	client, err := dapr.NewClientWithAddress(fmt.Sprintf("127.0.0.1:%d", grpcPort))
	if err != nil {
		return err
	}
	defer client.Close()
	ctx := context.Background()
	// The streaming subscription (SubscribeTopicEventsAlpha1): the SDK
	// holds the stream and acknowledges each event.
	var streamed atomic.Int64
	stopStream, err := client.SubscribeWithHandler(ctx, dapr.SubscriptionOptions{PubsubName: "pubsub", Topic: "stream-events"},
		func(*common.TopicEvent) common.SubscriptionResponseStatus {
			streamed.Add(1)
			return common.SubscriptionResponseStatusSuccess
		})
	if err != nil {
		return fmt.Errorf("streaming subscription: %w", err)
	}
	defer func() { _ = stopStream() }()
	value := []byte(`{"user":"u-1","conn":"c-1","gateway":"gw-1","device":"ios","lastSeen":1700000000}`)
	if err := client.SaveState(ctx, "statestore", "bench", value, nil); err != nil {
		return err
	}
	lua := func(name, body string) string {
		p := filepath.Join(work, name)
		_ = os.WriteFile(p, []byte(body), 0o644)
		return p
	}
	setLua := lua("set.lua", `wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local n = 0
request = function()
  n = n + 1
  return wrk.format(nil, nil, nil, '[{"key":"k' .. (n % 10000) .. '","value":{"user":"u-1","conn":"c-1","gateway":"gw-1","device":"ios","lastSeen":1700000000}}]')
end`)
	pubLua := lua("pub.lua", `wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"orderId":42,"item":"book","qty":1}'`)

	type measure struct {
		name string
		run  func() result
	}
	wrkRun := func(url, script string) func() result {
		return func() result {
			args := []string{"-t2", fmt.Sprintf("-c%d", conns), fmt.Sprintf("-d%s", duration)}
			if script != "" {
				args = append(args, "-s", script)
			}
			before := cpuOf(pid)
			out, _ := exec.Command("wrk", append(args, url)...).CombinedOutput()
			after := cpuOf(pid)
			n := wrkRequests(string(out))
			return result{rate: float64(n) / duration.Seconds(), cpuUs: perCall(after-before, n)}
		}
	}
	sdkRun := func(call func(i int) error) func() result {
		return func() result {
			var n atomic.Int64
			var failed atomic.Int64
			before := cpuOf(pid)
			deadline := time.Now().Add(duration)
			var wg sync.WaitGroup
			for g := range conns {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := g; time.Now().Before(deadline); i += conns {
						if call(i) != nil {
							failed.Add(1)
							continue
						}
						n.Add(1)
					}
				}()
			}
			wg.Wait()
			after := cpuOf(pid)
			if f := failed.Load(); f > 0 {
				fmt.Fprintf(os.Stderr, "grpcapi: %d calls failed\n", f)
			}
			return result{rate: float64(n.Load()) / duration.Seconds(), cpuUs: perCall(after-before, n.Load())}
		}
	}
	deliveries := func(app *atomic.Int64, url string) func() result {
		return func() result {
			start := app.Load()
			before := cpuOf(pid)
			out, _ := exec.Command("wrk", "-t2", fmt.Sprintf("-c%d", conns), fmt.Sprintf("-d%s", duration), "-s", pubLua, url).CombinedOutput()
			published := wrkRequests(string(out))
			// Let the deliveries under way finish.
			for i := 0; i < 100 && app.Load()-start < published; i++ {
				time.Sleep(50 * time.Millisecond)
			}
			after := cpuOf(pid)
			got := app.Load() - start
			return result{rate: float64(got) / duration.Seconds(), cpuUs: perCall(after-before, got)}
		}
	}
	measures := []measure{
		{"HTTP GetState (wrk)", wrkRun(base+"/v1.0/state/statestore/bench", "")},
		{"gRPC GetState (Go SDK)", sdkRun(func(int) error { _, err := client.GetState(ctx, "statestore", "bench", nil); return err })},
		{"HTTP SaveState (wrk)", wrkRun(base+"/v1.0/state/statestore", setLua)},
		{"gRPC SaveState (Go SDK)", sdkRun(func(i int) error { return client.SaveState(ctx, "statestore", "k"+strconv.Itoa(i%10000), value, nil) })},
		{"HTTP PublishEvent (wrk)", wrkRun(base+"/v1.0/publish/pubsub/orders", pubLua)},
		{"gRPC PublishEvent (Go SDK)", sdkRun(func(int) error {
			return client.PublishEvent(ctx, "pubsub", "orders", []byte(`{"orderId":42,"item":"book","qty":1}`), dapr.PublishEventWithContentType("application/json"))
		})},
		{"HTTP InvokeService, local app (wrk)", wrkRun(base+"/v1.0/invoke/httpapp/method/ping", "")},
		{"gRPC InvokeService, local app (Go SDK)", sdkRun(func(int) error { _, err := client.InvokeMethod(ctx, "httpapp", "ping", "get"); return err })},
		{"events delivered to the HTTP app", deliveries(&ha.events, base+"/v1.0/publish/pubsub/http-events")},
		{"events delivered to the gRPC app", deliveries(&ga.events, fmt.Sprintf("http://127.0.0.1:%d/v1.0/publish/pubsub/grpc-events", gHTTPPort))},
		{"events delivered over a streaming subscription (Go SDK)", deliveries(&streamed, base+"/v1.0/publish/pubsub/stream-events")},
	}
	results := make([][]result, len(measures))
	// BENCH_PROFILE=<part of a measure's name> takes a CPU profile of the
	// runtime during that measure, to cpu-<n>.pprof in this folder.
	profile := os.Getenv("BENCH_PROFILE")
	for round := range rounds {
		for i, m := range measures {
			var prof sync.WaitGroup
			if profile != "" && strings.Contains(m.name, profile) {
				prof.Add(1)
				go func() {
					defer prof.Done()
					url := fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/profile?seconds=%d", metricsPort, max(1, int(duration.Seconds())-1))
					if out, err := exec.Command("curl", "-sf", "-o", fmt.Sprintf("cpu-%d.pprof", round), url).CombinedOutput(); err != nil {
						fmt.Fprintf(os.Stderr, "grpcapi: profile: %v %s\n", err, out)
					}
				}()
			}
			results[i] = append(results[i], m.run())
			prof.Wait()
		}
	}
	fmt.Printf("machine: %d cores, %s, %s; %d SDK goroutines / wrk connections, %s per measure, median of %d interleaved rounds\n\n",
		runtime.NumCPU(), kernel(), runtime.Version(), conns, duration, rounds)
	fmt.Println("| measure | calls/s (median) | all rounds | runtime CPU µs/call (median) |")
	fmt.Println("|---|---|---|---|")
	for i, m := range measures {
		rs := results[i]
		rates := make([]float64, len(rs))
		cpus := make([]float64, len(rs))
		var all []string
		for j, r := range rs {
			rates[j], cpus[j] = r.rate, r.cpuUs
			all = append(all, fmt.Sprintf("%.0f", r.rate))
		}
		fmt.Printf("| %s | %.0f | %s | %.1f |\n", m.name, median(rates), strings.Join(all, " "), median(cpus))
	}
	return nil
}

func perCall(cpu time.Duration, calls int64) float64 {
	if calls == 0 {
		return 0
	}
	return float64(cpu.Microseconds()) / float64(calls)
}

func wrkRequests(out string) int64 {
	m := regexp.MustCompile(`(\d+) requests in`).FindStringSubmatch(out)
	if m == nil {
		return 0
	}
	n, _ := strconv.ParseInt(m[1], 10, 64)
	return n
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s[len(s)/2]
}

func waitHealthy(base string) {
	for range 200 {
		code, _, err := fasthttp.Get(nil, base+"/v1.0/healthz")
		if err == nil && code == 204 {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func kernel() string {
	b, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return "Linux " + strings.TrimSpace(string(b))
}
