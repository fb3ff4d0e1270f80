package tracecontext

import "testing"

func TestNewIsValid(t *testing.T) {
	a, b := New(), New()
	if !Valid(a) || !Valid(b) || a == b {
		t.Fatalf("New() = %q, %q", a, b)
	}
}

func TestValid(t *testing.T) {
	cases := map[string]bool{
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01": true,
		"00-00000000000000000000000000000000-00f067aa0ba902b7-01": false,
		"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01": false,
		"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01": false,
		"garbage": false,
		"":        false,
	}
	for in, want := range cases {
		if got := Valid(in); got != want {
			t.Errorf("Valid(%q) = %v, want %v", in, got, want)
		}
	}
	keep := "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	if Ensure(keep) != keep || !Valid(Ensure("x")) {
		t.Error("Ensure")
	}
}

func TestChild(t *testing.T) {
	parent := "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	c := Child(parent)
	if !Valid(c) || c[:36] != parent[:36] || c[52:] != parent[52:] || c[36:52] == parent[36:52] {
		t.Fatalf("Child(%s) = %s: want the same trace and flags with a new span", parent, c)
	}
	if c2 := Child(parent); c2 == c {
		t.Error("two children share a span id")
	}
	for _, bad := range []string{"", "garbage", "00-00000000000000000000000000000000-00f067aa0ba902b7-01"} {
		if c := Child(bad); !Valid(c) || c[3:35] == "00000000000000000000000000000000" {
			t.Errorf("Child(%q) = %q, want a fresh valid traceparent", bad, c)
		}
	}
}
