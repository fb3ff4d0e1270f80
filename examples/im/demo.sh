#!/usr/bin/env bash
# make im-demo: the IM example on two runtimes of one host, each with a
# gateway. Runtime A is the Crux cluster's server (it holds the slots);
# runtime B is a Crux client, so a session saved through either is read
# through the other. Open http://127.0.0.1:8081/?user=alice and
# http://127.0.0.1:8082/?user=bob and chat. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/../.."
go build -o bin/mecha ./cmd/mecha
go build -o bin/im-gateway ./examples/im/gateway
DIR=${IM_DEMO_DIR:-/tmp/mecha-im-demo}
mkdir -p "$DIR/a" "$DIR/b"
PEERS=http://127.0.0.1:8081,http://127.0.0.1:8082
trap 'kill $(jobs -p) 2>/dev/null; wait' INT TERM EXIT
WEB_PORT=8081 IM_WEB_PEERS=$PEERS bin/mecha run --app-id gateway --app-port 8091 --data-dir "$DIR/a" \
  --bootstrap-expect 1 --dapr-http-port 3500 --dapr-grpc-port 50001 --internal-port 50002 \
  --gossip-port 7946 --metrics-port 9090 --broker-port 9092 -- bin/im-gateway &
sleep 1
WEB_PORT=8082 IM_WEB_PEERS=$PEERS bin/mecha run --app-id gateway --app-port 8092 --data-dir "$DIR/b" \
  --crux-client --join 127.0.0.1:7946 --dapr-http-port 3501 --dapr-grpc-port 50011 --internal-port 50012 \
  --gossip-port 7947 --metrics-port 9091 --broker-port 9093 -- bin/im-gateway &
echo
echo "Open http://127.0.0.1:8081/?user=alice and http://127.0.0.1:8082/?user=bob (Ctrl-C stops the demo)"
wait
