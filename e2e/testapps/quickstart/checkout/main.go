// Command checkout is the checkout app of the Dapr quickstarts for
// pub/sub and service invocation, written from their README's
// behaviour: it sends ten orders, {"orderId": 1} to {"orderId": 10},
// one every ORDER_INTERVAL_MS (1000 by default), either published to
// topic "orders" of pubsub "orderpubsub" or posted to the "orders"
// method of app order-processor, printing each, then exits.
//
//	checkout http|sdk pubsub|invoke
//
// The http variant calls the runtime on DAPR_HTTP_PORT with net/http;
// the sdk variant is the Dapr Go SDK's client (gRPC, DAPR_GRPC_PORT).
package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"strconv"
	"time"

	dapr "github.com/dapr/go-sdk/client"
)

func main() {
	if len(os.Args) != 3 {
		log.Fatal("usage: checkout http|sdk pubsub|invoke")
	}
	variant, quickstart := os.Args[1], os.Args[2]
	interval := time.Second
	if ms, err := strconv.Atoi(os.Getenv("ORDER_INTERVAL_MS")); err == nil {
		interval = time.Duration(ms) * time.Millisecond
	}
	var client dapr.Client
	if variant == "sdk" {
		c, err := dapr.NewClient()
		if err != nil {
			log.Fatal(err)
		}
		defer c.Close()
		client = c
	}
	base := "http://localhost:" + os.Getenv("DAPR_HTTP_PORT")
	ctx := context.Background()
	for i := 1; i <= 10; i++ {
		order := []byte(fmt.Sprintf(`{"orderId":%d}`, i))
		var err error
		switch {
		case variant == "sdk" && quickstart == "pubsub":
			err = client.PublishEvent(ctx, "orderpubsub", "orders", order, dapr.PublishEventWithContentType("application/json"))
			fmt.Println("Published data:", string(order))
		case variant == "sdk":
			var resp []byte
			resp, err = client.InvokeMethodWithContent(ctx, "order-processor", "orders", "post", &dapr.DataContent{ContentType: "application/json", Data: order})
			fmt.Println("Order passed:", string(resp))
		case quickstart == "pubsub":
			err = post(base+"/v1.0/publish/orderpubsub/orders", order, nil)
			fmt.Println("Published data:", string(order))
		default:
			var resp []byte
			resp, err = postBody(base+"/orders", order, map[string]string{"dapr-app-id": "order-processor"})
			fmt.Println("Order passed:", string(resp))
		}
		if err != nil {
			log.Fatalf("order %d: %v", i, err)
		}
		time.Sleep(interval)
	}
}

func post(url string, body []byte, headers map[string]string) error {
	_, err := postBody(url, body, headers)
	return err
}

func postBody(url string, body []byte, headers map[string]string) ([]byte, error) {
	req, err := http.NewRequest("POST", url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		return nil, fmt.Errorf("%s: %d %s", url, resp.StatusCode, b)
	}
	return b, nil
}
