package job_test

import (
	"fmt"
	"time"

	"mecha/stream/job"
)

// A job built in Go rather than YAML: distinct users per page in 10 s
// windows, fed to its pipeline directly. With job.New and Run, the same
// Spec reads a topic instead.
func Example() {
	spec := job.Spec{
		Name:      "page-uv",
		Source:    job.Source{Topic: "clicks", EventTimeField: "ts"},
		Filter:    `page != ""`,
		KeyBy:     "page",
		Window:    job.Window{Type: "tumbling", Size: job.Duration{Duration: 10 * time.Second}},
		Aggregate: job.Aggregate{Type: "countDistinct", Field: "user"},
		Sink:      job.Sink{Type: "blackhole"},
	}
	p, err := job.NewPipeline(spec)
	if err != nil {
		fmt.Println(err)
		return
	}
	click := func(offset int64, page, user string, ts int64) job.Record {
		return job.Record{Topic: "clicks", Offset: offset, Fields: map[string]any{"page": page, "user": user, "ts": ts}}
	}
	p.Round([]job.Record{click(0, "home", "ann", 1000), click(1, "home", "bob", 2000), click(2, "home", "ann", 3000), click(3, "cart", "bob", 4000)}, time.Now())
	for _, r := range p.Round([]job.Record{click(4, "home", "cid", 12000)}, time.Now()) {
		fmt.Printf("%s [%d,%d): %v\n", r.Key, r.Window.Start, r.Window.End, r.Value)
	}
	// Output:
	// cart [0,10000): 1
	// home [0,10000): 2
}
