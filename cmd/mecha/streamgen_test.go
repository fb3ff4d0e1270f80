package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"mecha/broker/brokertest"
)

const genTemplate = `{"n":{"dist":"sequence"},"user":{"dist":"string","prefix":"user-","of":{"dist":"zipf","s":1.1,"max":1000}},
 "page":{"dist":"choice","values":["/","/cart"]},"ts":{"dist":"now"}}`

// TestStreamGen runs `mecha stream gen` in template mode, then doubles
// the topic it wrote, against an in-process broker.
func TestStreamGen(t *testing.T) {
	addr := brokertest.Start(t)
	file := filepath.Join(t.TempDir(), "sample.json")
	if err := os.WriteFile(file, []byte(genTemplate), 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	code := run([]string{"stream", "gen", "--brokers", addr, "--topic", "clicks", "--template", file,
		"--count", "200", "--seed", "1", "--key", "user", "--rate", "0"}, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if !strings.HasPrefix(out.String(), "gen: wrote 200 records to clicks in ") || !strings.HasSuffix(out.String(), " records/s)\n") {
		t.Fatalf("stdout %q", out.String())
	}
	recs := readAll(t, addr, "clicks")
	if len(recs) != 200 {
		t.Fatalf("clicks holds %d records, want 200", len(recs))
	}
	for _, r := range recs {
		var v struct{ User string }
		if err := json.Unmarshal(r.Value, &v); err != nil || v.User == "" || string(r.Key) != v.User {
			t.Fatalf("record %s keyed %q (%v)", r.Value, r.Key, err)
		}
	}

	out.Reset()
	code = run([]string{"stream", "gen", "--brokers", addr, "--from-topic", "clicks", "--topic", "clicks-x3",
		"--copies", "3", "--vary", "user"}, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if !strings.HasPrefix(out.String(), "gen: wrote 600 records to clicks-x3 in ") {
		t.Fatalf("stdout %q", out.String())
	}
	users := map[string]bool{}
	for _, r := range readAll(t, addr, "clicks-x3") {
		var v struct{ User string }
		_ = json.Unmarshal(r.Value, &v)
		users[v.User] = true
	}
	if src := distinctUsers(recs); len(users) != 3*src {
		t.Fatalf("%d distinct users after tripling, want 3×%d", len(users), src)
	}

	errb.Reset()
	code = run([]string{"stream", "gen", "--brokers", addr, "--from-topic", "nosuch", "--topic", "x"}, &out, &errb)
	if code != 2 || !strings.Contains(errb.String(), `--from-topic: topic "nosuch" does not exist`) {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
}

func distinctUsers(recs []*kgo.Record) int {
	m := map[string]bool{}
	for _, r := range recs {
		var v struct{ User string }
		_ = json.Unmarshal(r.Value, &v)
		m[v.User] = true
	}
	return len(m)
}

// TestStreamGenBadFlags: each bad flag exits 2 with an error naming it,
// before anything connects (the brokers are never dialled).
func TestStreamGenBadFlags(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.json")
	bad := filepath.Join(dir, "bad.json")
	_ = os.WriteFile(good, []byte(genTemplate), 0o644)
	_ = os.WriteFile(bad, []byte(`{"device":{"id":{"dist":"uniform","min":10,"max":5}}}`), 0o644)
	base := []string{"stream", "gen", "--brokers", "127.0.0.1:1", "--topic", "t"}
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"negative rate", []string{"--template", good, "--rate", "-1"}, "--rate: want a number of records per second ≥ 0, got -1"},
		{"rate not a number", []string{"--template", good, "--rate", "fast"}, `invalid value "fast" for flag -rate`},
		{"negative count", []string{"--template", good, "--count", "-5"}, "--count: want ≥ 0, got -5"},
		{"no mode", nil, "give --template FILE or --from-topic TOPIC"},
		{"both modes", []string{"--template", good, "--from-topic", "s"}, "--template and --from-topic: give one, not both"},
		{"missing file", []string{"--template", filepath.Join(dir, "nope.json")}, "--template: open "},
		{"bad template", []string{"--template", bad}, "--template " + bad + ": template: $.device.id: uniform: min 10 > max 5"},
		{"unknown key", []string{"--template", good, "--key", "nope"}, `--key: "nope": not a top-level field of the template`},
		{"speedup with template", []string{"--template", good, "--speedup", "2"}, "--speedup: replay only"},
		{"same topic", []string{"--from-topic", "t"}, `--topic: must differ from from-topic "t"`},
		{"retime without speedup", []string{"--from-topic", "s", "--retime"}, "--retime: needs a speedup > 0"},
		{"negative speedup", []string{"--from-topic", "s", "--speedup", "-2"}, "--speedup: want ≥ 0, got -2"},
		{"zero copies", []string{"--from-topic", "s", "--copies", "0"}, "--copies: want ≥ 1, got 0"},
		{"vary without copies", []string{"--from-topic", "s", "--vary", "user"}, "--vary: doubling only"},
		{"seed when copying", []string{"--from-topic", "s", "--seed", "3"}, "--seed: template mode only"},
		{"key when copying", []string{"--from-topic", "s", "--key", "user"}, "--key: template mode only"},
		{"unknown flag", []string{"--tempo", "3"}, "flag provided but not defined: -tempo"},
		{"extra argument", []string{"--template", good, "extra"}, `unexpected argument "extra"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			if code := run(append(append([]string{}, base...), c.args...), &out, &errb); code != 2 {
				t.Fatalf("exit %d, want 2; stderr %s", code, errb.String())
			}
			if !strings.Contains(errb.String(), c.want) {
				t.Fatalf("stderr %q, want it to say %q", errb.String(), c.want)
			}
		})
	}
	t.Run("no topic", func(t *testing.T) {
		var out, errb bytes.Buffer
		if code := run([]string{"stream", "gen", "--template", good}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "--topic: required") {
			t.Fatalf("exit %d: %s", code, errb.String())
		}
	})
	t.Run("help", func(t *testing.T) {
		var out, errb bytes.Buffer
		if code := run([]string{"stream", "gen", "-h"}, &out, &errb); code != 0 || !strings.Contains(errb.String(), "mecha stream gen --topic T --template FILE") {
			t.Fatalf("exit %d: %s", code, errb.String())
		}
	})
}

// readAll reads every partition of topic to its end.
func readAll(t *testing.T, addr, topic string) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ends, err := kadm.NewClient(cl).ListEndOffsets(context.Background(), topic)
	if err != nil || ends.Error() != nil {
		t.Fatalf("end offsets of %s: %v %v", topic, err, ends.Error())
	}
	left := 0
	from := map[int32]kgo.Offset{}
	ends.Each(func(o kadm.ListedOffset) {
		left += int(o.Offset)
		if o.Offset > 0 {
			from[o.Partition] = kgo.NewOffset().AtStart()
		}
	})
	if left == 0 {
		return nil
	}
	cons, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: from}))
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var recs []*kgo.Record
	for len(recs) < left {
		fs := cons.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %d of %d records of %s", len(recs), left, topic)
		}
		recs = append(recs, fs.Records()...)
	}
	return recs
}
