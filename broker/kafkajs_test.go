package broker

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestKafkajs runs kafkajs 2.2.4 (Node.js), which speaks only old,
// non-flexible versions, against the broker: admin CreateTopics, the
// idempotent producer at acks=all, and a consumer group reading every
// record once. `make deps` installs it (npm) under testdata/kafkajs.
func TestKafkajs(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not on PATH; make test needs Node.js for the kafkajs test")
	}
	dir := filepath.Join("testdata", "kafkajs")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "kafkajs")); err != nil {
		t.Skip("kafkajs is not installed; run `make deps` (npm install in broker/testdata/kafkajs)")
	}
	b := startBroker(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "roundtrip.js", b.Addr())
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.HasPrefix(strings.TrimSpace(string(out)), "OK 50") {
		t.Fatalf("kafkajs: %v\n%s", err, out)
	}
}
