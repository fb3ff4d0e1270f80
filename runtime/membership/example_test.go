package membership_test

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"mecha/runtime/membership"
)

// A runtime joins its DC's pool, publishes its app and resolves another.
func Example() {
	cfg := membership.DefaultConfig()
	cfg.DC = "dc-a"
	cfg.Join = []string{"10.0.0.1:7946"}
	cfg.InternalPort = 50002
	cfg.DataDir = "/var/lib/mecha/membership"
	node, err := membership.Start(cfg, slog.Default())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer node.Leave(context.Background())

	node.SetLocalApps([]membership.App{{ID: "orders", Healthy: true}})

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for v := uint64(0); ; {
		for _, in := range node.Instances("payments") {
			if in.Healthy && len(in.Gateways) == 0 {
				fmt.Println("local instance at", in.Addr, in.InternalPort)
			} else if in.Healthy {
				fmt.Println("instance in", in.DC, "via", in.Gateways)
			}
		}
		if v, err = node.Wait(ctx, v); err != nil {
			return
		}
	}
}
