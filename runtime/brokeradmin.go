package runtime

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/twmb/franz-go/pkg/kerr"
)

// brokerReassignAPI serves POST /v1.0-alpha1/broker/reassign: a partition
// reassignment of the broker cluster, as AlterPartitionReassignments asks
// it, with the smooth expansion option Kafka's request has no field for
// (`mecha broker reassign`).
func (r *Runtime) brokerReassignAPI(w http.ResponseWriter, req *http.Request) {
	var body struct {
		Topic      string  `json:"topic"`
		Partition  int32   `json:"partition"`
		Replicas   []int32 `json:"replicas"`
		FromLatest bool    `json:"fromLatest"`
		Cancel     bool    `json:"cancel"`
	}
	if !adminPost(w, req, "reassignment", &body) {
		return
	}
	fail := func(status int, code, msg string) { adminFail(w, status, code, msg) }
	switch {
	case body.Topic == "":
		fail(http.StatusBadRequest, "ERR_MALFORMED_REQUEST", "the reassignment request names no topic")
		return
	case body.Cancel == (len(body.Replicas) > 0):
		fail(http.StatusBadRequest, "ERR_MALFORMED_REQUEST", "give the new replicas (broker node ids) or cancel, not both or neither")
		return
	case r.broker == nil || !r.cfg.BrokerCluster:
		fail(http.StatusBadRequest, "ERR_BROKER_CLUSTER", "this runtime's broker is not in a broker cluster (--broker-cluster)")
		return
	}
	var nodes []int32
	if !body.Cancel {
		nodes = body.Replicas
	}
	if err := r.broker.Reassign(body.Topic, body.Partition, nodes, body.FromLatest); err != nil {
		status := http.StatusBadRequest
		if errors.Is(err, kerr.RequestTimedOut) {
			status = http.StatusServiceUnavailable
		}
		fail(status, "ERR_BROKER_REASSIGN", err.Error())
		return
	}
	_ = json.NewEncoder(w).Encode(map[string]any{"topic": body.Topic, "partition": body.Partition, "replicas": nodes, "fromLatest": body.FromLatest && !body.Cancel})
}
