// Command gossipbench measures the membership package with N runtimes in
// one process, each its own Node on 127.0.0.1 with its own ports: how
// long the catalog takes to converge (every node resolves every node's
// app), how long an app change takes to reach every node, and how long a
// crashed node (shut down without leaving) stays in the others' catalogs.
//
//	go run ./runtime/membership/internal/gossipbench -n 50 -kills 3
package main

import (
	"flag"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"slices"
	"strconv"
	"time"

	"mecha/runtime/membership"
)

func main() {
	n := flag.Int("n", 50, "runtimes to start")
	kills := flag.Int("kills", 3, "crashes to measure, one after another")
	timeout := flag.Duration("timeout", time.Minute, "give up waiting after this long")
	verbose := flag.Bool("v", false, "log membership warnings")
	flag.Parse()
	if err := run(*n, *kills, *timeout, *verbose); err != nil {
		fmt.Fprintln(os.Stderr, "gossipbench:", err)
		os.Exit(1)
	}
}

func appOf(i int) string { return "app-" + strconv.Itoa(i) }

func run(n, kills int, timeout time.Duration, verbose bool) error {
	if n < 2 || kills >= n-1 {
		return fmt.Errorf("need n >= 2 and kills < n-1")
	}
	level := slog.LevelError
	if verbose {
		level = slog.LevelWarn
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	fmt.Printf("gossipbench: %d runtimes in one process, GOMAXPROCS=%d, %s/%s\n", n, runtime.GOMAXPROCS(0), runtime.GOOS, runtime.GOARCH)

	nodes := make([]*membership.Node, 0, n)
	defer func() {
		for _, nd := range nodes {
			_ = nd.Shutdown()
		}
	}()
	start := time.Now()
	for i := range n {
		cfg := membership.DefaultConfig()
		cfg.NodeName = "node-" + strconv.Itoa(i)
		cfg.BindAddress = "127.0.0.1"
		cfg.GossipPort = 0
		if i > 0 {
			// Join through one of the first three nodes, as a
			// deployment with three seeds would.
			cfg.Join = []string{nodes[i%min(i, 3)].GossipAddr()}
		}
		nd, err := membership.Start(cfg, logger)
		if err != nil {
			return err
		}
		nd.SetLocalApps([]membership.App{{ID: appOf(i), Healthy: true}})
		nodes = append(nodes, nd)
	}
	started := time.Since(start)

	converged := func(alive []*membership.Node, pred func(*membership.Node) bool) bool {
		for _, nd := range alive {
			if !pred(nd) {
				return false
			}
		}
		return true
	}
	wait := func(what string, from time.Time, pred func() bool) (time.Duration, error) {
		for !pred() {
			if time.Since(from) > timeout {
				return 0, fmt.Errorf("%s: not done after %s", what, timeout)
			}
			time.Sleep(10 * time.Millisecond)
		}
		return time.Since(from), nil
	}

	conv, err := wait("convergence", start, func() bool {
		return converged(nodes, func(nd *membership.Node) bool {
			if len(nd.Members()) != n-1 {
				return false
			}
			for j := range n {
				if len(nd.Instances(appOf(j))) != 1 {
					return false
				}
			}
			return true
		})
	})
	if err != nil {
		return err
	}
	fmt.Printf("started %d nodes in %s; catalog converged (every node resolves all %d apps) %s after the first start\n",
		n, started.Round(time.Millisecond), n, conv.Round(time.Millisecond))

	changer := nodes[n-1]
	from := time.Now()
	changer.SetLocalApps([]membership.App{{ID: appOf(n - 1), Healthy: false}, {ID: "changed", Healthy: true}})
	change, err := wait("app change", from, func() bool {
		return converged(nodes, func(nd *membership.Node) bool { return len(nd.Instances("changed")) == 1 })
	})
	if err != nil {
		return err
	}
	fmt.Printf("app change on one node reached all %d nodes in %s\n", n, change.Round(time.Millisecond))

	alive := slices.Clone(nodes)
	var worst time.Duration
	for k := range kills {
		victim := alive[len(alive)/2]
		alive = slices.Delete(alive, len(alive)/2, len(alive)/2+1)
		victimApp := appOf(slices.Index(nodes, victim))
		from := time.Now()
		if err := victim.Shutdown(); err != nil { // no Leave: a crash
			return err
		}
		first := time.Duration(0)
		d, err := wait("dead-node detection", from, func() bool {
			gone := 0
			for _, nd := range alive {
				if len(nd.Instances(victimApp)) == 0 {
					gone++
				}
			}
			if gone > 0 && first == 0 {
				first = time.Since(from)
			}
			return gone == len(alive)
		})
		if err != nil {
			return err
		}
		worst = max(worst, d)
		fmt.Printf("crash %d: %s gone from the first catalog after %s, from all %d after %s\n",
			k+1, victim.Name(), first.Round(time.Millisecond), len(alive), d.Round(time.Millisecond))
	}
	if kills > 0 {
		fmt.Printf("dead-node detection, worst of %d: %s\n", kills, worst.Round(time.Millisecond))
	}
	return nil
}
