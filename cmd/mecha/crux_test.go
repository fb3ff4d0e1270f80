package main

import (
	"bytes"
	"net"
	"net/http"
	"strings"
	"testing"
)

// mecha crux refuses what it cannot do, with the usage or the reason,
// and names the runtime it could not reach.
func TestCruxCmdRefuses(t *testing.T) {
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{nil, 2, "mecha crux [-o json] status"},
		{[]string{"rebalance"}, 2, "mecha crux [-o json] status"},
		{[]string{"drain", "a", "b"}, 2, "mecha crux drain [MEMBER]"},
		{[]string{"--admin", "127.0.0.1:1", "drain", "a"}, 1, "is mecha run up, with its metrics port at --admin 127.0.0.1:1?"},
		{[]string{"-o", "yaml", "status"}, 2, `-o "yaml": want table or json`},
		{[]string{"--admin", "127.0.0.1:1", "status"}, 1, "is mecha run up, with its metrics port at --admin 127.0.0.1:1?"},
	} {
		var out, errb bytes.Buffer
		if code := run(append([]string{"crux"}, c.args...), &out, &errb); code != c.code || !strings.Contains(errb.String(), c.want) {
			t.Errorf("mecha crux %v: exit %d, %q; want exit %d naming %q", c.args, code, errb.String(), c.code, c.want)
		}
	}
}

// The table shows the summary and a member a line, from the status API's
// JSON; -o json prints that JSON.
func TestCruxStatusTable(t *testing.T) {
	body := `{"mode":"client","member":"client-im","clusterId":"prod","mapVersion":14,
"controlPlane":{"leader":"a","term":3,"voters":["a","b"]},
"members":[{"id":"a","addr":"10.0.0.1:1","roles":["data","server"],"state":"alive","leaders":512,"replicas":512},
{"id":"b","addr":"10.0.0.2:1","roles":["data","server"],"state":"dead","draining":true,"leaders":0,"replicas":512}],
"slots":{"total":1024,"leaderless":512,"underReplicated":512,"moving":1,"balanced":false},
"moves":[{"slot":7,"from":"b","to":"a","phase":"copying"}],
"routed":{"local":0,"remote":99,"moved":1,"unavailable":2}}`
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1.0-alpha1/crux/status" {
			http.NotFound(w, r)
			return
		}
		w.Write([]byte(body))
	})}
	go srv.Serve(l)
	defer srv.Close()
	var out, errb bytes.Buffer
	if code := run([]string{"crux", "--admin", l.Addr().String(), "status"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	for _, want := range []string{
		"this runtime: client, member client-im",
		"cluster:      prod, map version 14",
		"control plane: leader a, term 3, voters a, b",
		"slots:        1024, 512 leaderless, 512 under-replicated, 1 moving, not balanced",
		"routed here:  0 local, 99 remote, 1 moved, 2 unavailable",
		"b       10.0.0.2:1  data,server  dead (draining)  0      512",
		"7     b     a   copying",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the table lacks %q:\n%s", want, out.String())
		}
	}
	out.Reset()
	if code := run([]string{"crux", "--admin", l.Addr().String(), "-o", "json", "status"}, &out, &errb); code != 0 || !strings.Contains(out.String(), `"clusterId": "prod"`) {
		t.Fatalf("-o json: exit %d:\n%s", code, out.String())
	}
}
