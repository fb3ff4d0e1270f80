package broker

// Lag throttling (issue 15, item 6; Kuaishou's practice): while the disk
// that holds the logs is busy past a threshold, a consumer fetching far
// behind the high watermark (whose reads miss the page cache and compete
// with everyone's) gets no records for those partitions and a
// throttle_time_ms to wait, instead of a disk read. Consumers at the tail,
// whose reads the page cache serves, and replication are never throttled.
//
// Busy is the device's utilization, the share of wall time it had I/O in
// flight (io_ticks of /sys/dev/block/<major>:<minor>/stat), sampled every
// second. A data dir on a device without that file (tmpfs, overlay) is
// never busy.

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ThrottleConfig tunes lag throttling.
type ThrottleConfig struct {
	// DiskBusy is the utilization (0 to 1) from which lagging fetches
	// are throttled; 0 turns throttling off.
	DiskBusy float64
	// LagRecords is how far behind the high watermark a fetch must read
	// to count as lagging.
	LagRecords int64
	// Wait is the throttle_time_ms a throttled fetch is given.
	Wait time.Duration
}

// DefaultThrottleConfig throttles fetches more than 100,000 records behind
// while the disk is 80% busy, for 100 ms at a time.
func DefaultThrottleConfig() ThrottleConfig {
	return ThrottleConfig{DiskBusy: 0.8, LagRecords: 100000, Wait: 100 * time.Millisecond}
}

// diskMeter samples a block device's utilization.
type diskMeter struct {
	path     string // its /sys stat file; "" when none
	busy     atomic.Uint64
	lastIO   uint64
	lastWall time.Time
}

// newDiskMeter finds the device holding dir.
func newDiskMeter(dir string) *diskMeter {
	m := &diskMeter{}
	var st syscall.Stat_t
	if err := syscall.Stat(dir, &st); err != nil {
		return m
	}
	dev := uint64(st.Dev)
	p := fmt.Sprintf("/sys/dev/block/%d:%d/stat", unix.Major(dev), unix.Minor(dev))
	if _, err := os.Stat(p); err == nil {
		m.path = p
		m.lastIO, _ = readIOTicks(p)
		m.lastWall = time.Now()
	}
	return m
}

// readIOTicks is the device's io_ticks: milliseconds with I/O in flight.
func readIOTicks(path string) (uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(b))
	if len(f) < 10 {
		return 0, fmt.Errorf("%s: %d fields", path, len(f))
	}
	return strconv.ParseUint(f[9], 10, 64)
}

// sample updates the utilization since the last sample.
func (m *diskMeter) sample(now time.Time) {
	if m.path == "" {
		return
	}
	io, err := readIOTicks(m.path)
	if err != nil {
		return
	}
	wall := now.Sub(m.lastWall).Milliseconds()
	if wall > 0 && io >= m.lastIO {
		m.busy.Store(uint64(min(float64(io-m.lastIO)/float64(wall), 1) * 1e6))
	}
	m.lastIO, m.lastWall = io, now
}

// utilization is the last sample, 0 to 1.
func (m *diskMeter) utilization() float64 { return float64(m.busy.Load()) / 1e6 }

// diskBusy reports whether lagging fetches are throttled now.
func (b *Broker) diskBusy() bool {
	t := b.cfg.Throttle
	if t.DiskBusy <= 0 {
		return false
	}
	u := b.disk.utilization()
	if b.busyOverride != nil {
		u = b.busyOverride()
	}
	return u >= t.DiskBusy
}

// lagging says whether a fetch at offset reads far enough behind hw.
func (b *Broker) lagging(offset, hw int64) bool {
	return b.cfg.Throttle.LagRecords > 0 && hw-offset > b.cfg.Throttle.LagRecords
}
