package main

import (
	"bytes"
	"strings"
	"testing"
)

// A mistyped flag prints the error, a suggestion and where the flags
// are listed: a few lines, not the hundred of the whole list (which
// scrolled the error away). -h still lists them.
func TestMistypedFlag(t *testing.T) {
	for _, c := range []struct {
		args []string
		want []string
	}{
		{[]string{"run", "--app-idd", "x"}, []string{"flag provided but not defined: -app-idd", "Did you mean --app-id?", "'mecha run -h' lists the flags."}},
		{[]string{"run", "--gossip-prot", "1"}, []string{"Did you mean --gossip-port?"}},
		{[]string{"broker", "--bogus"}, []string{"flag provided but not defined: -bogus", "'mecha broker -h' lists the flags."}},
		{[]string{"stream", "gen", "--tempo", "3"}, []string{"flag provided but not defined: -tempo"}},
	} {
		var out, errb bytes.Buffer
		if code := run(c.args, &out, &errb); code != 2 {
			t.Fatalf("%v: exit %d, want 2", c.args, code)
		}
		for _, w := range c.want {
			if !strings.Contains(errb.String(), w) {
				t.Errorf("%v: stderr %q, want %q", c.args, errb.String(), w)
			}
		}
		if n := strings.Count(errb.String(), "\n"); n > 4 {
			t.Errorf("%v: %d lines of stderr, want a few:\n%s", c.args, n, errb.String())
		}
	}
	var out, errb bytes.Buffer
	if code := run([]string{"run", "-h"}, &out, &errb); code != 0 || !strings.Contains(errb.String(), "-dapr-http-port") {
		t.Errorf("-h: exit %d, stderr %.200q", code, errb.String())
	}
}

func TestClosestFlag(t *testing.T) {
	for _, c := range [][2]string{{"kitten", "sitting"}, {"", "abc"}, {"abc", "abc"}} {
		if d := editDistance(c[0], c[1]); d != map[string]int{"kitten": 3, "": 3, "abc": 0}[c[0]] {
			t.Errorf("editDistance(%q, %q) = %d", c[0], c[1], d)
		}
	}
}
