package sdk_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"mecha/sdk"
)

// An IM gateway keeps a user's session in Crux: one {hash tag} per user
// keeps their devices in one slot, a TTL that heartbeats refresh, and the
// gateway's instance id so that others can reach the connection.
func Example() {
	c, err := sdk.New() // DAPR_GRPC_PORT, DAPR_API_TOKEN, MECHA_CATALOG
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	md, err := c.Metadata(ctx)
	if err != nil {
		log.Fatal(err)
	}
	session := fmt.Appendf(nil, `{"gateway":%q,"device":"phone"}`, md.InstanceID)
	if err := c.SaveState(ctx, "statestore", "{user-42}:phone", session, sdk.WithTTL(90*time.Second)); err != nil {
		log.Fatal(err)
	}
	// Every device of the user, from one slot.
	devices, err := c.ScanState(ctx, "statestore", "{user-42}:", 0)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(len(devices), "devices")
}

// A message goes to the one gateway instance that holds the recipient's
// connection; a gone instance is told apart from a failed call.
func ExampleInstance() {
	c, err := sdk.New()
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	_, err = c.Invoke(context.Background(), "gateway", "deliver", []byte(`{"to":"user-42","text":"hi"}`),
		sdk.ContentType("application/json"), sdk.Instance("host-b-7946"))
	switch {
	case errors.Is(err, sdk.ErrInstanceNotFound):
		// The session is stale: drop it and keep the message in the inbox.
	case err != nil:
		log.Fatal(err)
	}
}

// ETags make a read-modify-write safe against concurrent writers.
func ExampleWithETag() {
	c, err := sdk.New()
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	for {
		it, err := c.GetState(ctx, "statestore", "counter")
		if err != nil {
			log.Fatal(err)
		}
		n := 0
		fmt.Sscan(string(it.Value), &n)
		err = c.SaveState(ctx, "statestore", "counter", fmt.Append(nil, n+1), sdk.WithETag(it.ETag), sdk.Strong())
		if errors.Is(err, sdk.ErrETagMismatch) {
			continue // someone wrote first: read again
		}
		if err != nil {
			log.Fatal(err)
		}
		return
	}
}

// A streaming subscription: the handler's nil acknowledges an event, an
// error has it delivered again.
func ExampleClient_Subscribe() {
	c, err := sdk.New()
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err = c.Subscribe(ctx, "pubsub", "group-7", func(_ context.Context, ev *sdk.Event) error {
		fmt.Printf("%s\n", ev.Data)
		return nil
	})
	if err != nil && !errors.Is(err, context.DeadlineExceeded) {
		log.Fatal(err)
	}
}
