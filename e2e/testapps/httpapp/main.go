// Command httpapp is the HTTP app the end-to-end tests run behind mecha. It
// declares subscriptions, answers deliveries with SUCCESS, RETRY or DROP
// depending on the route, echoes invocations, takes an input binding and
// records everything it received for the test to read at GET /received.
package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"mecha/e2e/testapps/pattern"
)

type received struct {
	Route   string            `json:"route"`
	Body    json.RawMessage   `json:"body"`
	Headers map[string]string `json:"headers"`
}

type app struct {
	inflight atomic.Int64
	failures atomic.Int64
	mu       sync.Mutex
	received []received
	attempts map[string]int
}

func (a *app) record(route string, r *http.Request, body []byte) {
	h := map[string]string{}
	for k := range r.Header {
		h[k] = r.Header.Get(k)
	}
	raw := json.RawMessage(body)
	if !json.Valid(body) {
		raw, _ = json.Marshal(string(body))
	}
	a.mu.Lock()
	a.received = append(a.received, received{Route: route, Body: raw, Headers: h})
	a.mu.Unlock()
}

func main() {
	port := flag.Int("port", 0, "port to listen on (0 picks one)")
	flag.Parse()
	a := &app{attempts: map[string]int{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /dapr/subscribe", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `[
 {"pubsubname":"pubsub","topic":"orders","route":"/orders"},
 {"pubsubname":"pubsub","topic":"retry-topic","route":"/retry"},
 {"pubsubname":"pubsub","topic":"drop-topic","route":"/drop","deadLetterTopic":"dead"},
 {"pubsubname":"pubsub","topic":"fail-topic","route":"/fail","deadLetterTopic":"dead"},
 {"pubsubname":"pubsub","topic":"gone-topic","route":"/no-such-route"},
 {"pubsubname":"pubsub","topic":"routed","routes":{"rules":[{"match":"event.data.kind == \"big\"","path":"/big"}],"default":"/small"}},
 {"pubsubname":"pubsub","topic":"bulk-topic","route":"/bulk","bulkSubscribe":{"enabled":true,"maxMessagesCount":10,"maxAwaitDurationMs":50}},
 {"pubsubname":"pubsub","topic":"dead","route":"/dead"},
 {"pubsubname":"pubsub","topic":"slow-topic","route":"/slow"}
]`)
	})
	ok := func(route string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			a.record(route, r, b)
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprint(w, `{"status":"SUCCESS"}`)
		}
	}
	// stream-results takes a stream job's app sink.
	for _, route := range []string{"orders", "big", "small", "dead", "declarative", "declarative-special", "stream-results"} {
		mux.HandleFunc("POST /"+route, ok(route))
	}
	// retry answers RETRY to the first delivery of each event id.
	mux.HandleFunc("POST /retry", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var ev struct {
			ID string `json:"id"`
		}
		_ = json.Unmarshal(b, &ev)
		a.mu.Lock()
		a.attempts[ev.ID]++
		n := a.attempts[ev.ID]
		a.mu.Unlock()
		a.record("retry", r, b)
		if n == 1 {
			fmt.Fprint(w, `{"status":"RETRY"}`)
			return
		}
		fmt.Fprint(w, `{"status":"SUCCESS"}`)
	})
	mux.HandleFunc("POST /drop", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		a.record("drop", r, b)
		fmt.Fprint(w, `{"status":"DROP"}`)
	})
	mux.HandleFunc("POST /fail", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		a.record("fail", r, b)
		http.Error(w, "boom", http.StatusInternalServerError)
	})
	mux.HandleFunc("POST /bulk", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		a.record("bulk", r, b)
		var req struct {
			Entries []struct {
				EntryID string `json:"entryId"`
			} `json:"entries"`
		}
		_ = json.Unmarshal(b, &req)
		type st struct {
			EntryID string `json:"entryId"`
			Status  string `json:"status"`
		}
		var out struct {
			Statuses []st `json:"statuses"`
		}
		for _, e := range req.Entries {
			out.Statuses = append(out.Statuses, st{e.EntryID, "SUCCESS"})
		}
		_ = json.NewEncoder(w).Encode(out)
	})
	// Input binding "mybinding": accepted, and the reply saves state.
	mux.HandleFunc("OPTIONS /mybinding", func(w http.ResponseWriter, r *http.Request) {})
	mux.HandleFunc("POST /mybinding", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		a.record("mybinding", r, b)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"storeName":"statestore","state":[{"key":"from-binding","value":{"seen":true}}]}`)
	})
	// sha hashes the body as it arrives; blob?size=N&seed=S answers N
	// bytes of a deterministic pattern, written as they are made. Both
	// hold no body whole, to test streaming through the runtimes.
	mux.HandleFunc("POST /sha", func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		n, err := io.Copy(h, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, "%d %s", n, hex.EncodeToString(h.Sum(nil)))
	})
	mux.HandleFunc("GET /blob", func(w http.ResponseWriter, r *http.Request) {
		size, _ := strconv.ParseInt(r.URL.Query().Get("size"), 10, 64)
		seed, _ := strconv.Atoi(r.URL.Query().Get("seed"))
		w.Header().Set("Content-Type", "application/octet-stream")
		if r.URL.Query().Get("chunked") == "" {
			w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
		}
		_, _ = io.Copy(w, io.LimitReader(pattern.New(byte(seed)), size))
	})
	mux.HandleFunc("/echo/", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		h := map[string]string{}
		for k := range r.Header {
			h[k] = r.Header.Get(k)
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Echo", "yes")
		if ms, err := strconv.Atoi(r.URL.Query().Get("sleepms")); err == nil {
			a.inflight.Add(1)
			time.Sleep(time.Duration(ms) * time.Millisecond)
			a.inflight.Add(-1)
		}
		code := http.StatusOK
		switch r.URL.Query().Get("status") {
		case "418":
			code = http.StatusTeapot
		case "500":
			code = http.StatusInternalServerError
			a.failures.Add(1)
		}
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(map[string]any{"method": r.Method, "path": r.URL.Path, "query": r.URL.RawQuery, "headers": h, "body": string(b)})
	})
	// slow takes a while to answer, for graceful shutdown tests; GET
	// /inflight tells how many slow requests are under way.
	mux.HandleFunc("POST /slow", func(w http.ResponseWriter, r *http.Request) {
		a.inflight.Add(1)
		defer a.inflight.Add(-1)
		b, _ := io.ReadAll(r.Body)
		time.Sleep(time.Second)
		a.record("slow", r, b)
		fmt.Fprint(w, `{"status":"SUCCESS"}`)
	})
	// failures counts the echo calls answered 500 on request.
	mux.HandleFunc("GET /failures", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, strconv.FormatInt(a.failures.Load(), 10))
	})
	mux.HandleFunc("GET /inflight", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, strconv.FormatInt(a.inflight.Load(), 10))
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		if _, err := os.Stat(os.Getenv("UNHEALTHY_FILE")); os.Getenv("UNHEALTHY_FILE") != "" && err == nil {
			http.Error(w, "sick", http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	mux.HandleFunc("GET /received", func(w http.ResponseWriter, r *http.Request) {
		route := r.URL.Query().Get("route")
		a.mu.Lock()
		out := []received{}
		for _, x := range a.received {
			if route == "" || x.Route == route {
				out = append(out, x)
			}
		}
		a.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(out)
	})
	lis, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", *port))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("LISTENING %d\n", lis.Addr().(*net.TCPAddr).Port)
	if err := http.Serve(lis, mux); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
