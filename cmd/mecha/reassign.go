package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
)

const reassignUsage = `Usage:
  mecha broker reassign [flags] TOPIC PARTITION BROKER,BROKER,...
                            move a partition of the broker cluster to the brokers
                            (Kafka node ids, as kcat -L lists them)
  mecha broker reassign [flags] --cancel TOPIC PARTITION

Flags:
  --admin host:port   mecha run's metrics port (default 127.0.0.1:9090)
  --from-latest       start the new replicas at the leader's high watermark
                      instead of copying the partition's history (smooth
                      expansion); they join the in-sync set once the leader's
                      retention has dropped what they did not copy
  --cancel            cancel the partition's reassignment
`

// reassignCmd asks a running mecha's broker cluster for a reassignment.
func reassignCmd(args []string, stdout, stderr io.Writer) int {
	fs, admin, _ := adminFlags("mecha broker reassign", reassignUsage, stderr)
	fromLatest := fs.Bool("from-latest", false, "start the new replicas at the leader's high watermark")
	cancel := fs.Bool("cancel", false, "cancel the partition's reassignment")
	if code, ok := parseFlags(fs, args, stderr); !ok {
		return code
	}
	want := 3
	if *cancel {
		want = 2
	}
	if fs.NArg() != want {
		fmt.Fprint(stderr, reassignUsage)
		return 2
	}
	part, err := strconv.ParseInt(fs.Arg(1), 10, 32)
	if err != nil || part < 0 {
		fmt.Fprintf(stderr, "mecha broker reassign: partition %q is not a partition number\n", fs.Arg(1))
		return 2
	}
	body := map[string]any{"topic": fs.Arg(0), "partition": part, "fromLatest": *fromLatest, "cancel": *cancel}
	if !*cancel {
		var nodes []int32
		for _, s := range strings.Split(fs.Arg(2), ",") {
			n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 32)
			if err != nil {
				fmt.Fprintf(stderr, "mecha broker reassign: broker %q is not a node id\n", s)
				return 2
			}
			nodes = append(nodes, int32(n))
		}
		body["replicas"] = nodes
	}
	b, _ := json.Marshal(body)
	out, ok := adminCall("mecha broker reassign", *admin, "POST", "http://"+*admin+"/v1.0-alpha1/broker/reassign", string(b), stderr)
	if !ok {
		return 1
	}
	writeJSON(stdout, out)
	return 0
}
