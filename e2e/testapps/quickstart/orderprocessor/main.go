// Command orderprocessor is the order-processor app of the Dapr
// quickstarts for pub/sub and service invocation, written from their
// README's behaviour: it receives orders, either as the subscriber of
// topic "orders" on pubsub "orderpubsub", or as the target of the
// "orders" method, and prints each one.
//
//	orderprocessor http|sdk pubsub|invoke
//
// The http variant speaks Dapr's HTTP app contract with net/http; the sdk
// variant is the Dapr Go SDK's service. It listens on APP_PORT.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"

	"github.com/dapr/go-sdk/service/common"
	daprd "github.com/dapr/go-sdk/service/http"
)

func main() {
	if len(os.Args) != 3 {
		log.Fatal("usage: orderprocessor http|sdk pubsub|invoke")
	}
	variant, quickstart := os.Args[1], os.Args[2]
	addr := ":" + os.Getenv("APP_PORT")
	if variant == "sdk" {
		s := daprd.NewService(addr)
		var err error
		if quickstart == "pubsub" {
			err = s.AddTopicEventHandler(&common.Subscription{PubsubName: "orderpubsub", Topic: "orders", Route: "/orders"},
				func(_ context.Context, e *common.TopicEvent) (bool, error) {
					fmt.Println("Subscriber received:", string(e.RawData))
					return false, nil
				})
		} else {
			err = s.AddServiceInvocationHandler("/orders", func(_ context.Context, in *common.InvocationEvent) (*common.Content, error) {
				fmt.Println("Order received:", string(in.Data))
				return &common.Content{Data: in.Data, ContentType: "application/json"}, nil
			})
		}
		if err != nil {
			log.Fatal(err)
		}
		log.Fatal(s.Start())
	}
	mux := http.NewServeMux()
	if quickstart == "pubsub" {
		mux.HandleFunc("GET /dapr/subscribe", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprint(w, `[{"pubsubname":"orderpubsub","topic":"orders","route":"orders"}]`)
		})
		mux.HandleFunc("POST /orders", func(w http.ResponseWriter, r *http.Request) {
			var ev struct {
				Data json.RawMessage `json:"data"`
			}
			if err := json.NewDecoder(r.Body).Decode(&ev); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			fmt.Println("Subscriber received:", string(ev.Data))
			w.WriteHeader(http.StatusOK)
		})
	} else {
		mux.HandleFunc("POST /orders", func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			fmt.Println("Order received:", string(b))
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(b)
		})
	}
	log.Fatal(http.ListenAndServe(addr, mux))
}
