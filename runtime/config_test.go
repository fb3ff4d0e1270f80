package runtime

import (
	"flag"
	"io"
	"strings"
	"testing"
)

func parseRunFlags(t *testing.T, args ...string) (Config, error) {
	t.Helper()
	c := DefaultConfig()
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	c.BindFlags(fs)
	err := fs.Parse(args)
	return c, err
}

// --broker-port 0 picks a port, as every other port flag; --broker=false
// is the off switch.
func TestBrokerFlags(t *testing.T) {
	for _, tc := range []struct {
		args     []string
		port     int
		noBroker bool
		err      string
	}{
		{args: nil, port: 9092},
		{args: []string{"--broker-port", "0"}, port: 0},
		{args: []string{"--broker-port", "-1"}, port: -1},
		{args: []string{"--broker=false"}, port: 9092, noBroker: true},
		{args: []string{"--broker"}, port: 9092},
		{args: []string{"--broker=maybe"}, err: `"maybe" is not true or false`},
	} {
		c, err := parseRunFlags(t, append([]string{"--app-id", "a"}, tc.args...)...)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%v: err %v, want %q", tc.args, err, tc.err)
			}
			continue
		}
		if err != nil || c.BrokerPort != tc.port || c.NoBroker != tc.noBroker {
			t.Errorf("%v: port %d noBroker %v err %v; want %d %v", tc.args, c.BrokerPort, c.NoBroker, err, tc.port, tc.noBroker)
		}
	}
	c, _ := parseRunFlags(t, "--app-id", "a", "--broker-port", "70000")
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "--broker=false turns the broker off") {
		t.Errorf("bad port: %v", err)
	}
}
