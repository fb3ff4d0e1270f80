package broker

import (
	"encoding/binary"
	"errors"
	"math/rand"
	"reflect"
	"sort"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"
)

func TestPrescanCoversSupportedAPIs(t *testing.T) {
	for key := range supportedAPIs {
		if requestShapes[key] == nil {
			t.Errorf("%s (key %d) is served but has no layout for the pre-scan", kmsg.NameForKey(key), key)
		}
	}
}

// fillRandom sets every exported field of v (a kmsg request or one of its
// parts) to random content: arrays of 0 to 3 elements, null and empty
// strings and bytes, negative numbers, and unknown tags, which kmsg
// encodes into each struct's tagged fields in flexible versions.
func fillRandom(rng *rand.Rand, v reflect.Value) {
	switch v.Kind() {
	case reflect.Bool:
		v.SetBool(rng.Intn(2) == 1)
	case reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		// Small, negative and -1 often: they are the counts' edge cases
		// when misread as lengths.
		switch rng.Intn(4) {
		case 0:
			v.SetInt(-1)
		case 1:
			v.SetInt(int64(rng.Intn(3)))
		default:
			v.SetInt(rng.Int63() >> (64 - v.Type().Bits()))
		}
	case reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(uint64(rng.Int63()) >> (64 - v.Type().Bits()))
	case reflect.Float64:
		v.SetFloat(rng.Float64())
	case reflect.String:
		v.SetString(randomString(rng))
	case reflect.Pointer:
		if rng.Intn(3) == 0 {
			v.Set(reflect.Zero(v.Type()))
			return
		}
		p := reflect.New(v.Type().Elem())
		fillRandom(rng, p.Elem())
		v.Set(p)
	case reflect.Array:
		for i := 0; i < v.Len(); i++ {
			fillRandom(rng, v.Index(i))
		}
	case reflect.Slice:
		n := rng.Intn(4)
		if v.Type().Elem().Kind() == reflect.Uint8 {
			n = rng.Intn(20)
		}
		if n == 0 && rng.Intn(2) == 0 {
			v.Set(reflect.Zero(v.Type()))
			return
		}
		s := reflect.MakeSlice(v.Type(), n, n)
		for i := 0; i < n; i++ {
			fillRandom(rng, s.Index(i))
		}
		v.Set(s)
	case reflect.Struct:
		if tags, ok := v.Addr().Interface().(*kmsg.Tags); ok {
			// Keys above any kmsg knows in these requests.
			for i := rng.Intn(3); i > 0; i-- {
				val := make([]byte, rng.Intn(5))
				rng.Read(val)
				tags.Set(uint32(10+rng.Intn(200)), val)
			}
			return
		}
		for i := 0; i < v.NumField(); i++ {
			f := v.Type().Field(i)
			if !f.IsExported() || f.Name == "Version" {
				continue
			}
			fillRandom(rng, v.Field(i))
		}
	}
}

func randomString(rng *rand.Rand) string {
	b := make([]byte, rng.Intn(6))
	for i := range b {
		b[i] = byte('a' + rng.Intn(26))
	}
	return string(b)
}

func sortedKeys() []int16 {
	keys := make([]int16, 0, len(supportedAPIs))
	for k := range supportedAPIs {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i] < keys[j] })
	return keys
}

// The layouts follow kmsg: every request kmsg encodes, at every version
// kmsg knows (beyond those served, so that the known tags kmsg writes only
// at newer versions are covered too), walks to its last byte; every
// shorter prefix of it is refused, by the walk and by kmsg alike. A field
// missing from a layout, or present at a version where kmsg has none,
// would leave bytes over or run out.
func TestPrescanMatchesKmsg(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	for _, key := range sortedKeys() {
		for v := int16(0); v <= kmsg.RequestForKey(key).MaxVersion(); v++ {
			for i := 0; i < 300; i++ {
				req := kmsg.RequestForKey(key)
				fillRandom(rng, reflect.ValueOf(req).Elem())
				req.SetVersion(v)
				body := req.AppendTo(nil)
				p := prescanner{b: body, version: v, flexible: req.IsFlexible(), exact: true}
				err := p.walk(requestShapes[key])
				if rest := len(p.b); err != nil || rest != 0 {
					t.Fatalf("%s v%d: pre-scan of a kmsg-encoded body: %d bytes left, %v\nbody %x\nrequest %+v", kmsg.NameForKey(key), v, rest, err, body, req)
				}
				back := kmsg.RequestForKey(key)
				back.SetVersion(v)
				if err := back.ReadFrom(body); err != nil {
					t.Fatalf("%s v%d: kmsg does not decode its own encoding: %v", kmsg.NameForKey(key), v, err)
				}
				cut := rng.Intn(len(body) + 1)
				if cut == len(body) {
					continue
				}
				_, perr := prescanBody(key, v, req.IsFlexible(), body[:cut])
				again := kmsg.RequestForKey(key)
				again.SetVersion(v)
				kerr := again.ReadFrom(body[:cut])
				if perr == nil || kerr == nil {
					t.Fatalf("%s v%d: the first %d of %d bytes: pre-scan %v, kmsg %v; want both to refuse", kmsg.NameForKey(key), v, cut, len(body), perr, kerr)
				}
			}
		}
	}
}

// A Fetch's known tags are walked as kmsg decodes them: a well-formed
// ReplicaState (key 1) passes, one holding a huge tag count does not.
func TestPrescanKnownTags(t *testing.T) {
	fetch := kmsg.NewPtrFetchRequest()
	fetch.SetVersion(12)
	body := fetch.AppendTo(nil)
	body = body[:len(body)-1] // the empty tag section
	replicaState := []byte{0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2}
	for _, tc := range []struct {
		name string
		tags []byte
		ok   bool
	}{
		{"ReplicaState with no tags", append(append([]byte{1, 1, 13}, replicaState...), 0), true},
		{"ReplicaState with one tag", append(append([]byte{1, 1, 16}, replicaState...), 1, 5, 1, 'x'), true},
		{"ReplicaState with a huge tag count", append(append([]byte{1, 1, 17}, replicaState...), hugeCount...), false},
		{"ReplicaState cut short", append([]byte{1, 1, 8}, replicaState[:8]...), false},
		{"ClusterID", []byte{1, 0, 3, 3, 'i', 'd'}, true},
		{"ClusterID longer than its tag", []byte{1, 0, 3, 9, 'i', 'd'}, false},
		{"an unknown tag of any content", []byte{1, 7, 3, 0xff, 0xff, 0xff}, true},
		{"a tag longer than the body", []byte{1, 7, 30, 0}, false},
	} {
		b := append(append([]byte(nil), body...), tc.tags...)
		_, perr := prescanBody(1, 12, true, b)
		if (perr == nil) != tc.ok {
			t.Errorf("%s: pre-scan %v, want ok=%v", tc.name, perr, tc.ok)
		}
		if tc.ok {
			req := kmsg.NewPtrFetchRequest()
			req.SetVersion(12)
			if err := req.ReadFrom(b); err != nil {
				t.Errorf("%s: the pre-scan passed what kmsg refuses: %v", tc.name, err)
			}
		}
	}
}

// Counts that the bytes cannot back are refused, in tags and arrays, in
// flexible and older versions; nothing is looped over.
func TestPrescanRefusesCounts(t *testing.T) {
	for _, tc := range []struct {
		name          string
		key, version  int16
		body          []byte
		wantErr       bool
		wantStepsUpTo int
	}{
		{"tag count 2^32-1", 18, 3, append([]byte{1, 1}, hugeCount...), true, 3},
		{"tag count 2^31", 18, 3, []byte{1, 1, 0x80, 0x80, 0x80, 0x80, 0x08}, true, 3},
		{"tag count 2 with 3 bytes", 18, 3, []byte{1, 1, 2, 1, 0, 5}, true, 3},
		{"uvarint over 32 bits", 18, 3, []byte{1, 1, 0xff, 0xff, 0xff, 0xff, 0x1f}, true, 3},
		{"compact array count 2^32-2 reads as negative: empty", 15, 5, []byte{0xfe, 0xff, 0xff, 0xff, 0x0f, 0, 0}, false, 2},
		{"compact array count 2^31 wraps to 2^31-1", 15, 5, []byte{0x80, 0x80, 0x80, 0x80, 0x08, 0, 0}, true, 1},
		{"compact array count 1000 with 3 bytes", 15, 5, []byte{0xe9, 0x07, 1, 1, 0}, true, 1},
		{"array count 2^31-1", 15, 0, []byte{0x7f, 0xff, 0xff, 0xff}, true, 1},
		{"negative array count reads as empty", 15, 0, []byte{0xff, 0xff, 0xff, 0xfe}, false, 1},
		{"string length -2", 12, 0, []byte{0xff, 0xfe}, true, 1},
		{"null string where a string is required", 12, 0, []byte{0xff, 0xff}, true, 1},
		{"bytes length -1 reads as empty", 11, 0, []byte{0, 1, 'g', 0, 0, 0, 1, 0, 1, 'm', 0, 1, 'c', 0, 0, 0, 1, 0, 1, 'r', 0xff, 0xff, 0xff, 0xff}, false, 12},
		{"bytes length -2", 11, 0, []byte{0, 1, 'g', 0, 0, 0, 1, 0, 1, 'm', 0, 1, 'c', 0, 0, 0, 1, 0, 1, 'r', 0xff, 0xff, 0xff, 0xfe}, true, 12},
	} {
		p := prescanner{b: tc.body, version: tc.version, flexible: tc.version >= map[int16]int16{18: 3, 15: 5, 12: 4, 11: 6}[tc.key]}
		err := p.walk(requestShapes[tc.key])
		if (err != nil) != tc.wantErr || (err != nil && !errors.Is(err, errPrescan)) {
			t.Errorf("%s: %v, want error %v", tc.name, err, tc.wantErr)
		}
		if p.steps > tc.wantStepsUpTo {
			t.Errorf("%s: %d steps, want at most %d", tc.name, p.steps, tc.wantStepsUpTo)
		}
	}
}

// prescanFuzzSeeds are bodies for FuzzPrescan: each served request at
// each version, as kmsg encodes it with random content, and the traps.
func prescanFuzzSeeds() [][]byte {
	rng := rand.New(rand.NewSource(2))
	var out [][]byte
	for _, key := range sortedKeys() {
		r := supportedAPIs[key]
		for v := r.min; v <= r.max; v++ {
			req := kmsg.RequestForKey(key)
			fillRandom(rng, reflect.ValueOf(req).Elem())
			req.SetVersion(v)
			hdr := binary.BigEndian.AppendUint16(nil, uint16(key))
			hdr = binary.BigEndian.AppendUint16(hdr, uint16(v))
			out = append(out, req.AppendTo(hdr))
		}
	}
	out = append(out,
		append([]byte{0, 18, 0, 3, 1, 1}, hugeCount...),
		[]byte{0, 1, 0, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 17, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff, 0x0f},
	)
	return out
}

// FuzzPrescan: the walk is bounded by its input (one step per byte at
// most, so it cannot spin), and what it accepts kmsg decodes. The reverse,
// that it accepts what kmsg decodes, is TestPrescanMatchesKmsg: kmsg
// cannot be run on what the walk refuses, since that may spin.
func FuzzPrescan(f *testing.F) {
	for _, s := range prescanFuzzSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) < 4 || len(in) > maxFuzzFrame {
			return
		}
		key := int16(binary.BigEndian.Uint16(in))
		version := int16(binary.BigEndian.Uint16(in[2:]))
		r, ok := supportedAPIs[key]
		if !ok || version < r.min || version > r.max {
			return
		}
		body := in[4:]
		req := kmsg.RequestForKey(key)
		req.SetVersion(version)
		p := prescanner{b: body, version: version, flexible: req.IsFlexible()}
		err := p.walk(requestShapes[key])
		if p.steps > len(body)+1 {
			t.Fatalf("%d steps over %d bytes", p.steps, len(body))
		}
		if err != nil {
			if !errors.Is(err, errPrescan) {
				t.Fatalf("error without the sentinel: %v", err)
			}
			return
		}
		if err := req.ReadFrom(body); err != nil {
			t.Fatalf("%s v%d: the pre-scan passed a body kmsg refuses: %v", kmsg.NameForKey(key), version, err)
		}
	})
}
