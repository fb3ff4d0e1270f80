package membership

import (
	"encoding/base64"
	"errors"
	"flag"
	"reflect"
	"strings"
	"testing"
)

func TestConfigDefaultsAreValid(t *testing.T) {
	c := DefaultConfig()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.DC != "dc1" || c.GossipPort != 7946 {
		t.Fatalf("defaults %+v", c)
	}
}

func TestConfigFlags(t *testing.T) {
	c := DefaultConfig()
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	c.BindFlags(fs)
	key := base64.StdEncoding.EncodeToString(make([]byte, 16))
	err := fs.Parse([]string{
		"--dc", "dc-a", "--region", "eu", "--gossip-port", "0", "--join", "10.0.0.1:7946, 10.0.0.2:7946",
		"--join", "10.0.0.3:7946", "--advertise-address", "10.0.0.9", "--gossip-key", key, "--gateway",
		"--wan-port", "8302", "--wan-join", "10.1.0.1:8302", "--node-name", "n1", "--roles", "broker,crux",
		"--gossip-bind-address", "127.0.0.1",
	})
	if err != nil {
		t.Fatal(err)
	}
	want := DefaultConfig()
	want.DC, want.Region, want.GossipPort, want.AdvertiseAddress, want.GossipKey = "dc-a", "eu", 0, "10.0.0.9", key
	want.Join = []string{"10.0.0.1:7946", "10.0.0.2:7946", "10.0.0.3:7946"}
	want.Gateway, want.WANPort, want.WANJoin, want.NodeName = true, 8302, []string{"10.1.0.1:8302"}, "n1"
	want.Roles, want.BindAddress = []string{"broker", "crux"}, "127.0.0.1"
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("got %+v\nwant %+v", c, want)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(*Config)
		flag   string
	}{
		{"no dc", func(c *Config) { c.DC = "" }, "--dc"},
		{"dc with slash", func(c *Config) { c.DC = "a/b" }, "--dc"},
		{"bad key", func(c *Config) { c.GossipKey = "!!" }, "--gossip-key"},
		{"short key", func(c *Config) { c.GossipKey = base64.StdEncoding.EncodeToString(make([]byte, 10)) }, "--gossip-key"},
		{"bad port", func(c *Config) { c.GossipPort = 70000 }, "--gossip-port"},
		{"negative port", func(c *Config) { c.WANPort = -1 }, "--wan-port"},
		{"join without port", func(c *Config) { c.Join = []string{"10.0.0.1"} }, "--join"},
		{"wan join without gateway", func(c *Config) { c.WANJoin = []string{"10.0.0.1:8302"} }, "--wan-join"},
		{"bad advertise", func(c *Config) { c.AdvertiseAddress = "host" }, "--advertise-address"},
		{"bad bind", func(c *Config) { c.BindAddress = "" }, "--gossip-bind-address"},
		{"long name", func(c *Config) { c.NodeName = strings.Repeat("n", maxName+1) }, "--node-name"},
		{"meta too large", func(c *Config) {
			for range maxRoles + 1 {
				c.Roles = append(c.Roles, "role")
			}
		}, "--roles"},
		{"probe timeout", func(c *Config) { c.ProbeTimeout = c.ProbeInterval }, "probe"},
		{"view ttl", func(c *Config) { c.ViewTTL = c.ViewRefresh }, "view"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			tc.mutate(&c)
			err := c.Validate()
			if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.flag) {
				t.Fatalf("error %v, want one naming %s", err, tc.flag)
			}
		})
	}
}
