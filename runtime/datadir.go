package runtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"mecha/internal/fsutil"
)

// Several runtimes on one host share its data dir. The first runtime
// started on a data dir owns it: it holds <data-dir>/owner.lock (an
// flock, released by the kernel when the process dies, kill -9
// included) and records its addresses in <data-dir>/owner.json. A
// runtime started later on the same data dir is its guest:
//   - every port not given by a flag is picked free (the owner has the
//     defaults);
//   - it joins the owner's gossip (unless --join is given), so that the
//     runtimes of the host invoke each other's apps by app-id;
//   - it starts no broker of its own (unless --broker-port is given):
//     pubsub.mecha, bindings.mecha and stream jobs use the owner's;
//   - what it keeps of its own (membership, stream checkpoints) goes to
//     <data-dir>/guests/<app-id>.
// Owner and guests are otherwise equal, and nothing else needs saying:
// a second `mecha run --app-id b` on a host just works.

const (
	ownerLockFile   = "owner.lock"
	ownerRecordFile = "owner.json"
	guestsDir       = "guests"
)

// ownerRecord is what owner.json holds.
type ownerRecord struct {
	PID      int    `json:"pid"`
	AppID    string `json:"appID"`
	Gossip   string `json:"gossip"`
	Internal string `json:"internal"`
	// Broker is host:port of the owner's broker, "" when it runs none.
	Broker string `json:"broker,omitempty"`
	// Cluster says the owner is in a Crux cluster: its guests are clients
	// of the cluster too.
	Cluster bool `json:"cluster,omitempty"`
}

// ownerWait bounds how long a guest waits for a starting owner's record.
const ownerWait = 20 * time.Second

// claimDataDir takes the data dir, as its owner or as a guest of the
// runtime that owns it, and adjusts the configuration of a guest.
func (r *Runtime) claimDataDir(ctx context.Context) error {
	dir := r.cfg.DataDir
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("--data-dir %s: %w", dir, err)
	}
	f, err := os.OpenFile(filepath.Join(dir, ownerLockFile), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("--data-dir %s: %w", dir, err)
	}
	err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	if err == nil {
		r.ownerLock = f
		return nil
	}
	f.Close()
	if !errors.Is(err, syscall.EWOULDBLOCK) {
		return fmt.Errorf("--data-dir %s: lock %s: %w", dir, ownerLockFile, err)
	}
	owner, err := waitOwner(ctx, dir)
	if err != nil {
		return err
	}
	r.becomeGuest(dir, owner)
	return nil
}

// waitOwner reads the owner's record, waiting while the owner starts.
func waitOwner(ctx context.Context, dir string) (ownerRecord, error) {
	path := filepath.Join(dir, ownerRecordFile)
	deadline := time.Now().Add(ownerWait)
	for {
		var rec ownerRecord
		b, err := os.ReadFile(path)
		if err == nil {
			if err = json.Unmarshal(b, &rec); err == nil && rec.PID > 0 && syscall.Kill(rec.PID, 0) == nil {
				return rec, nil
			}
		}
		if time.Now().After(deadline) {
			return rec, fmt.Errorf("--data-dir %s is held by another mecha run, which has not said where it listens (%s) within %v: wait for it, stop it, or give this runtime another --data-dir", dir, ownerRecordFile, ownerWait)
		}
		select {
		case <-ctx.Done():
			return rec, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// becomeGuest makes this runtime a guest of owner on dir.
func (r *Runtime) becomeGuest(dir string, owner ownerRecord) {
	c := &r.cfg
	pick := func(flag string, p *int) {
		if !c.Explicit[flag] {
			*p = 0
		}
	}
	pick("dapr-http-port", &c.HTTPPort)
	pick("dapr-grpc-port", &c.GRPCPort)
	pick("metrics-port", &c.MetricsPort)
	pick("internal-port", &c.InternalPort)
	pick("gossip-port", &c.Membership.GossipPort)
	pick("wan-port", &c.Membership.WANPort)
	if !c.Explicit["broker-port"] && !c.NoBroker {
		c.NoBroker = true
		r.hostBroker = owner.Broker
	}
	if !c.Explicit["join"] && owner.Gossip != "" {
		c.Membership.Join = []string{owner.Gossip}
	}
	c.DataDir = filepath.Join(dir, guestsDir, c.AppID)
	r.guestOf = &owner
	r.log.Info("another mecha run owns the data dir: sharing its broker and joining its gossip, on free ports",
		"data_dir", dir, "owner_pid", owner.PID, "owner_app_id", owner.AppID, "owner_broker", owner.Broker, "owner_gossip", owner.Gossip)
}

// recordOwner writes owner.json once this owner's ports are known.
func (r *Runtime) recordOwner(context.Context) error {
	if r.ownerLock == nil {
		return nil
	}
	rec := ownerRecord{PID: os.Getpid(), AppID: r.cfg.AppID, Broker: r.brokerAddr(),
		Gossip: r.node.GossipAddr(), Internal: r.internalLis.Addr().String(), Cluster: r.cfg.BootstrapExpect > 0 || r.cfg.CruxClient}
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	return fsutil.WriteFile(filepath.Join(r.cfg.DataDir, ownerRecordFile), b)
}

// releaseDataDir removes the owner's record and lets the lock go.
func (r *Runtime) releaseDataDir(context.Context) {
	if r.ownerLock == nil {
		return
	}
	_ = os.Remove(filepath.Join(r.cfg.DataDir, ownerRecordFile))
	r.ownerLock.Close()
	r.ownerLock = nil
}
