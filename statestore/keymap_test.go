package statestore

import (
	"hash/maphash"
	"testing"
)

// TestKeyMapCollisions forces every key onto one hash to exercise the
// collision path, which real 64-bit hashes almost never take.
func TestKeyMapCollisions(t *testing.T) {
	k := newKeyMap(maphash.MakeSeed(), 0)
	// Plant records directly under one hash, as colliding keys would be.
	const h = 42
	put := func(key, val string) {
		r, _ := newRec(key, []byte(val), 1, 0)
		k.insert(h, key, r)
	}
	put("a", "1")
	put("b", "2")
	put("c", "3")
	if k.len() != 3 || len(k.coll) != 2 {
		t.Fatalf("len %d coll %d", k.len(), len(k.coll))
	}
	seen := map[string]string{}
	k.each(func(key string, r *recHeader) bool { seen[key] = string(r.value()); return true })
	if len(seen) != 3 || seen["a"] != "1" || seen["b"] != "2" || seen["c"] != "3" {
		t.Fatalf("each saw %v", seen)
	}
	// Keys in coll are found by get, whatever their real hash.
	if r, ok := k.get("b"); !ok || string(r.value()) != "2" {
		t.Fatal("collided key not found")
	}
}

func TestKeyMapBasics(t *testing.T) {
	k := newKeyMap(maphash.MakeSeed(), 0)
	k.put("x", []byte("1"), 1, 0)
	k.put("x", []byte("2"), 2, 0)
	if r, ok := k.get("x"); !ok || string(r.value()) != "2" || r.version != 2 || k.len() != 1 {
		t.Fatal("update")
	}
	k.del("x")
	if _, ok := k.get("x"); ok || k.len() != 0 {
		t.Fatal("delete")
	}
	k.del("missing")
}
