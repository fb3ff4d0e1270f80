package clustermap

import "testing"

// TestSlot pins Slot to the values statestore.SlotOf gives, so that the
// map's idea of where a key lives and the store's agree, and checks the
// hash-tag rule.
func TestSlot(t *testing.T) {
	golden := []struct {
		key  string
		slot int
	}{
		{"", 0},
		{"a", 955},
		{"foo", 835},
		{"user:1000", 595},
		{"{user1000}.following", 709},
		{"{user1000}.followers", 709},
		{"foo{}{bar}", 407},
		{"foo{{bar}}zap", 739},
		{"foo{bar}{zap}", 676},
		{"{}", 341},
		{"{", 59},
		{"}", 147},
		{"a{b", 531},
		{"session:42:token", 743},
		{"\x00\xff", 758},
	}
	for _, g := range golden {
		if got := Slot(g.key); got != g.slot {
			t.Errorf("Slot(%q) = %d, statestore says %d", g.key, got, g.slot)
		}
	}
	// The tag alone decides; an empty tag does not count.
	tags := [][2]string{
		{"{user1000}.following", "user1000"},
		{"x{bar}{zap}", "bar"},
		{"foo{{bar}}zap", "{bar"},
		{"foo{}{bar}", "foo{}{bar}"},
	}
	for _, tg := range tags {
		if Slot(tg[0]) != Slot(tg[1]) {
			t.Errorf("Slot(%q) != Slot(%q)", tg[0], tg[1])
		}
	}
}

// FuzzSlot checks the range and the tag rule on any key.
func FuzzSlot(f *testing.F) {
	f.Add("{a}b")
	f.Add("")
	f.Fuzz(func(t *testing.T, key string) {
		s := Slot(key)
		if s < 0 || s >= NumSlots {
			t.Fatalf("Slot(%q) = %d", key, s)
		}
		if Slot("{"+key+"}suffix") != Slot(key) && key != "" && !containsBrace(key) {
			t.Fatalf("tag of %q not honoured", key)
		}
	})
}

func containsBrace(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == '}' {
			return true
		}
	}
	return false
}
