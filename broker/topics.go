package broker

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"mecha/broker/storage"
	"mecha/internal/fsutil"
)

// Sentinel errors of the topic registry; api files map them to Kafka codes.
var (
	errTopicExists   = errors.New("topic already exists")
	errUnknownTopic  = errors.New("unknown topic")
	errInvalidTopic  = errors.New("invalid topic name")
	errInvalidConfig = errors.New("invalid topic config")
	errInvalidParts  = errors.New("invalid partition count")
)

// maxPartitions bounds a topic's partition count, so a request cannot make
// the broker open millions of files.
const maxPartitions = 10000

// topic is one topic and its partitions.
type topic struct {
	name string
	dir  string

	// mu guards parts, configs and cfg; produce and fetch take it shared
	// for the lookup only.
	mu      sync.RWMutex
	parts   []*storage.Partition
	configs map[string]string // explicit overrides, by Kafka config name
	cfg     storage.Config

	inflight atomic.Int32 // produce requests holding a queue slot
}

// topicFile is topic.json: what a restart needs besides the logs.
type topicFile struct {
	Partitions int32             `json:"partitions"`
	Configs    map[string]string `json:"configs,omitempty"`
}

// partition returns partition p, or nil.
func (t *topic) partition(p int32) *storage.Partition {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if p < 0 || int(p) >= len(t.parts) {
		return nil
	}
	return t.parts[p]
}

func (t *topic) numPartitions() int32 {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return int32(len(t.parts))
}

// topicRegistry holds the topics, persisted under dir/<name>/.
type topicRegistry struct {
	dir   string
	trash string // deleted topics, removed in the background
	base  storage.Config
	files *storage.SegmentFiles // bounds the open segment files of every partition
	log   *slog.Logger

	mu     sync.RWMutex // guards topics
	topics map[string]*topic
}

func openTopics(dir string, cfg Config, log *slog.Logger) (*topicRegistry, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	r := &topicRegistry{dir: dir, trash: filepath.Join(filepath.Dir(dir), "trash"), base: cfg.Log, log: log, topics: map[string]*topic{},
		files: storage.NewSegmentFiles(cfg.MaxOpenSegmentFiles)}
	// Deletions that a crash interrupted.
	_ = os.RemoveAll(r.trash)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		raw, err := os.ReadFile(filepath.Join(dir, e.Name(), "topic.json"))
		if err != nil {
			log.Warn("broker: skipping a topic directory without topic.json", "dir", e.Name(), "err", err)
			continue
		}
		var tf topicFile
		if err := json.Unmarshal(raw, &tf); err != nil || tf.Partitions <= 0 {
			r.close()
			return nil, fmt.Errorf("topic %s: bad topic.json: %v", e.Name(), err)
		}
		t, err := r.openTopic(e.Name(), tf)
		if err != nil {
			r.close()
			return nil, err
		}
		r.topics[t.name] = t
	}
	return r, nil
}

func (r *topicRegistry) openTopic(name string, tf topicFile) (*topic, error) {
	cfg, err := topicConfig(r.base, tf.Configs)
	if err != nil {
		return nil, fmt.Errorf("topic %s: %w", name, err)
	}
	t := &topic{name: name, dir: filepath.Join(r.dir, name), configs: tf.Configs, cfg: cfg}
	for p := int32(0); p < tf.Partitions; p++ {
		part, err := r.files.OpenPartition(filepath.Join(t.dir, strconv.Itoa(int(p))), cfg)
		if err != nil {
			for _, q := range t.parts {
				q.Close()
			}
			return nil, fmt.Errorf("topic %s: %w", name, err)
		}
		t.parts = append(t.parts, part)
	}
	return t, nil
}

// validTopicName applies Kafka's rules: 1 to 249 of [a-zA-Z0-9._-], not
// "." or "..".
func validTopicName(name string) error {
	if name == "" || len(name) > 249 || name == "." || name == ".." {
		return fmt.Errorf("%w: %q must be 1 to 249 characters and not \".\" or \"..\"", errInvalidTopic, name)
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("%w: %q has %q; use letters, digits, '.', '_' and '-'", errInvalidTopic, name, c)
		}
	}
	return nil
}

// topicConfigNames are the topic configs the broker honours.
var topicConfigNames = []string{"cleanup.policy", "max.message.bytes", "retention.bytes", "retention.ms", "segment.bytes"}

// topicConfig applies overrides to base, rejecting unknown names and bad
// values with an error naming the config.
func topicConfig(base storage.Config, overrides map[string]string) (storage.Config, error) {
	cfg := base
	for k, v := range overrides {
		if !slices.Contains(topicConfigNames, k) {
			return cfg, fmt.Errorf("%w: %s is not a supported topic config (supported: %s)", errInvalidConfig, k, strings.Join(topicConfigNames, ", "))
		}
		var n int64
		var err error
		if k != "cleanup.policy" {
			if n, err = strconv.ParseInt(v, 10, 64); err != nil {
				return cfg, fmt.Errorf("%w: %s=%q is not an integer", errInvalidConfig, k, v)
			}
		}
		switch k {
		case "cleanup.policy":
			if v != "delete" {
				return cfg, fmt.Errorf("%w: cleanup.policy=%q; only \"delete\" is supported", errInvalidConfig, v)
			}
		case "retention.ms":
			cfg.RetentionMs = n
		case "retention.bytes":
			cfg.RetentionBytes = n
		case "segment.bytes":
			cfg.SegmentBytes = n
		case "max.message.bytes":
			if n > 1<<31-1 {
				return cfg, fmt.Errorf("%w: max.message.bytes=%d is too large", errInvalidConfig, n)
			}
			cfg.MaxBatchBytes = int(n)
		default:
			return cfg, fmt.Errorf("%w: %s is not a supported topic config (supported: %s)", errInvalidConfig, k, strings.Join(topicConfigNames, ", "))
		}
	}
	if err := cfg.Validate(); err != nil {
		return cfg, fmt.Errorf("%w: %v", errInvalidConfig, err)
	}
	return cfg, nil
}

func (r *topicRegistry) get(name string) *topic {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.topics[name]
}

func (r *topicRegistry) count() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.topics)
}

// names returns the topic names, sorted.
func (r *topicRegistry) names() []string {
	r.mu.RLock()
	out := make([]string, 0, len(r.topics))
	for n := range r.topics {
		out = append(out, n)
	}
	r.mu.RUnlock()
	sort.Strings(out)
	return out
}

// create makes a topic; validateOnly checks without creating.
func (r *topicRegistry) create(name string, partitions int32, configs map[string]string, validateOnly bool) (*topic, error) {
	if err := validTopicName(name); err != nil {
		return nil, err
	}
	if partitions <= 0 || partitions > maxPartitions {
		return nil, fmt.Errorf("%w: %d is outside [1, %d]", errInvalidParts, partitions, maxPartitions)
	}
	if _, err := topicConfig(r.base, configs); err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if t, ok := r.topics[name]; ok {
		return t, fmt.Errorf("%w: %s", errTopicExists, name)
	}
	if validateOnly {
		return nil, nil
	}
	tf := topicFile{Partitions: partitions, Configs: configs}
	dir := filepath.Join(r.dir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if err := writeJSON(filepath.Join(dir, "topic.json"), tf); err != nil {
		return nil, err
	}
	t, err := r.openTopic(name, tf)
	if err != nil {
		return nil, err
	}
	r.topics[name] = t
	r.log.Info("broker: topic created", "topic", name, "partitions", partitions)
	return t, nil
}

// alterConfigs replaces a topic's overrides with what change makes of a
// copy of them: checked, written to topic.json, then used by every
// partition. With validateOnly it only checks.
func (r *topicRegistry) alterConfigs(name string, validateOnly bool, change func(map[string]string) (map[string]string, error)) error {
	t := r.get(name)
	if t == nil {
		return fmt.Errorf("%w: %s", errUnknownTopic, name)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	next, err := change(t.configs)
	if err != nil {
		return err
	}
	cfg, err := topicConfig(r.base, next)
	if err != nil {
		return err
	}
	if validateOnly {
		return nil
	}
	if len(next) == 0 {
		next = nil
	}
	if err := writeJSON(filepath.Join(t.dir, "topic.json"), topicFile{Partitions: int32(len(t.parts)), Configs: next}); err != nil {
		return err
	}
	t.configs, t.cfg = next, cfg
	for _, p := range t.parts {
		if err := p.SetConfig(cfg); err != nil {
			return err
		}
	}
	r.log.Info("broker: topic configs altered", "topic", name, "configs", next)
	return nil
}

// setConfigs makes a topic's overrides configs, if they are not already
// (the broker cluster's map says them).
func (r *topicRegistry) setConfigs(name string, configs map[string]string) error {
	err := r.alterConfigs(name, false, func(cur map[string]string) (map[string]string, error) {
		if maps.Equal(cur, configs) {
			return nil, errConfigsUnchanged
		}
		return maps.Clone(configs), nil
	})
	if errors.Is(err, errConfigsUnchanged) {
		return nil
	}
	return err
}

var errConfigsUnchanged = errors.New("broker: configs unchanged")

// ensure returns a topic, creating it with the default partition count
// when auto-creation is on.
func (r *topicRegistry) ensure(name string, auto bool, partitions int32) (*topic, error) {
	if t := r.get(name); t != nil {
		return t, nil
	}
	if !auto {
		return nil, fmt.Errorf("%w: %s", errUnknownTopic, name)
	}
	t, err := r.create(name, partitions, nil, false)
	if errors.Is(err, errTopicExists) {
		return t, nil
	}
	return t, err
}

// addPartitions grows a topic to count partitions.
func (r *topicRegistry) addPartitions(name string, count int32, validateOnly bool) error {
	t := r.get(name)
	if t == nil {
		return fmt.Errorf("%w: %s", errUnknownTopic, name)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	have := int32(len(t.parts))
	if count <= have || count > maxPartitions {
		return fmt.Errorf("%w: topic %s has %d partitions; the new count must be above that and at most %d, got %d", errInvalidParts, name, have, maxPartitions, count)
	}
	if validateOnly {
		return nil
	}
	// topic.json first: a partition that takes writes must be one a
	// restart reopens.
	if err := writeJSON(filepath.Join(t.dir, "topic.json"), topicFile{Partitions: count, Configs: t.configs}); err != nil {
		return err
	}
	for p := have; p < count; p++ {
		part, err := r.files.OpenPartition(filepath.Join(t.dir, strconv.Itoa(int(p))), t.cfg)
		if err != nil {
			return err
		}
		t.parts = append(t.parts, part)
	}
	return nil
}

// remove deletes a topic: it disappears at once, and its files are removed
// after its partitions close. The directory moves to the trash before the
// name is free again, so a topic auto-created right after (a producer
// refreshing its metadata) starts empty in a new directory instead of
// reopening the deleted files.
func (r *topicRegistry) remove(name string) error {
	r.mu.Lock()
	t, ok := r.topics[name]
	if !ok {
		r.mu.Unlock()
		return fmt.Errorf("%w: %s", errUnknownTopic, name)
	}
	trash := filepath.Join(r.trash, fmt.Sprintf("%s-%d", name, time.Now().UnixNano()))
	if err := os.MkdirAll(r.trash, 0o755); err != nil {
		r.mu.Unlock()
		return err
	}
	if err := os.Rename(t.dir, trash); err != nil {
		r.mu.Unlock()
		return err
	}
	delete(r.topics, name)
	r.mu.Unlock()
	// Open files survive the rename: close them, then delete.
	t.mu.Lock()
	for _, p := range t.parts {
		p.Close()
	}
	t.mu.Unlock()
	go os.RemoveAll(trash)
	r.log.Info("broker: topic deleted", "topic", name)
	return nil
}

func (r *topicRegistry) all() []*topic {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]*topic, 0, len(r.topics))
	for _, t := range r.topics {
		out = append(out, t)
	}
	return out
}

func (r *topicRegistry) flush(log *slog.Logger) {
	for _, t := range r.all() {
		t.mu.RLock()
		parts := t.parts
		t.mu.RUnlock()
		for i, p := range parts {
			if err := p.Flush(); err != nil {
				log.Error("broker: fsync failed; the partition takes no more writes", "topic", t.name, "partition", i, "err", err)
			}
		}
	}
}

func (r *topicRegistry) enforceRetention(now time.Time, log *slog.Logger) {
	for _, t := range r.all() {
		t.mu.RLock()
		parts := t.parts
		t.mu.RUnlock()
		for i, p := range parts {
			if n := p.EnforceRetention(now); n > 0 {
				log.Info("broker: retention deleted segments", "topic", t.name, "partition", i, "segments", n)
			}
		}
	}
}

func (r *topicRegistry) close() error {
	var errs []error
	for _, t := range r.all() {
		t.mu.Lock()
		for _, p := range t.parts {
			if err := p.Close(); err != nil {
				errs = append(errs, err)
			}
		}
		t.mu.Unlock()
	}
	return errors.Join(errs...)
}

func writeJSON(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return fsutil.WriteFile(path, b)
}

// producerIDs hands out producer ids, persisting a high-water mark in
// blocks so that ids are never reused across restarts.
type producerIDs struct {
	path string

	mu    sync.Mutex // guards next and limit
	next  int64
	limit int64
}

const producerIDBlock = 1000

func openProducerIDs(path string) (*producerIDs, error) {
	p := &producerIDs{path: path}
	if b, err := os.ReadFile(path); err == nil {
		n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("producer id file %s: bad content %q", path, b)
		}
		p.next = n
	} else if !os.IsNotExist(err) {
		return nil, err
	}
	p.limit = p.next
	return p, nil
}

func (p *producerIDs) allocate() (int64, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.next >= p.limit {
		limit := p.next + producerIDBlock
		if err := writeJSON(p.path, limit); err != nil {
			return 0, fmt.Errorf("persist producer ids: %w", err)
		}
		p.limit = limit
	}
	id := p.next
	p.next++
	return id, nil
}
