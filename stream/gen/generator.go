package gen

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"strconv"
	"time"
)

// Generator makes records from a Template. It is not safe for concurrent
// use: give each goroutine its own.
type Generator struct {
	t      *Template
	rng    *rand.Rand
	fields []field
	// keySlot is the slot whose value keys records; -1 for none.
	keySlot  int
	keyConst []byte
	// Now gives the event time, in ms since the epoch, of "now" fields;
	// nil reads the wall clock. Tests set it for reproducible records.
	Now func() int64
}

// field is a slot's generator with its state.
type field interface {
	appendTo(dst []byte, g *Generator) []byte
}

// intField is a generator of integers, which a string generator wraps.
type intField interface {
	field
	next(g *Generator) int64
}

// NewGenerator returns a generator seeded with seed. With keyField set,
// Append also returns each record's key: the value of that top-level
// field (a string without its quotes).
func (t *Template) NewGenerator(seed uint64, keyField string) (*Generator, error) {
	g := &Generator{t: t, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), keySlot: -1}
	for _, d := range t.slots {
		g.fields = append(g.fields, g.instantiate(d))
	}
	if keyField != "" {
		ref, ok := t.top[keyField]
		switch {
		case !ok:
			return nil, fmt.Errorf("key %q: not a top-level field of the template", keyField)
		case !ref.ok:
			return nil, fmt.Errorf("key %q: an object or an array cannot key a record", keyField)
		}
		g.keySlot, g.keyConst = ref.slot, ref.konst
	}
	return g, nil
}

// instantiate gives d its per-generator state.
func (g *Generator) instantiate(d *dist) field {
	switch d.kind {
	case "sequence":
		return &seqField{next_: d.start}
	case "uniform":
		return uniformField{min: d.min, span: d.span}
	case "normal":
		return normalField{mean: d.mean, stddev: d.stddev, decimals: d.decimals}
	case "zipf":
		return zipfField{z: rand.NewZipf(g.rng, d.s, d.v, d.max-1), max: d.max}
	case "choice":
		f := choiceField{values: d.values, cum: d.cum}
		if len(d.cum) > 0 {
			f.total = d.cum[len(d.cum)-1]
		}
		return f
	case "string":
		return stringField{prefix: d.prefix, suffix: d.suffix, of: g.instantiate(d.of).(intField)}
	case "now":
		return nowField{jitter: d.jitter}
	}
	return boolField{p: d.p}
}

// Append appends the next record to dst and returns the extended buffer,
// and the record's key when the generator has a key field (nil when it
// has none). The key may point into the buffer: it holds until the
// buffer is written over.
func (g *Generator) Append(dst []byte) (out, key []byte) {
	ks, ke := -1, -1
	for i, f := range g.fields {
		dst = append(dst, g.t.chunks[i]...)
		if i == g.keySlot {
			ks = len(dst)
		}
		dst = f.appendTo(dst, g)
		if i == g.keySlot {
			ke = len(dst)
		}
	}
	dst = append(dst, g.t.chunks[len(g.fields)]...)
	if ks >= 0 {
		return dst, keyText(dst[ks:ke])
	}
	return dst, g.keyConst
}

// keyText is the key a field's JSON value gives: a string's text, or the
// JSON itself.
func keyText(v []byte) []byte {
	if len(v) < 2 || v[0] != '"' {
		return v
	}
	if bytes.IndexByte(v, '\\') < 0 {
		return v[1 : len(v)-1]
	}
	var s string
	if json.Unmarshal(v, &s) != nil {
		return v
	}
	return []byte(s)
}

type seqField struct{ next_ int64 }

func (f *seqField) next(*Generator) int64 {
	v := f.next_
	f.next_++
	return v
}

func (f *seqField) appendTo(dst []byte, g *Generator) []byte {
	return strconv.AppendInt(dst, f.next(g), 10)
}

type uniformField struct {
	min  int64
	span uint64 // max − min
}

func (f uniformField) next(g *Generator) int64 {
	if f.span == math.MaxUint64 {
		return int64(g.rng.Uint64())
	}
	return f.min + int64(g.rng.Uint64N(f.span+1))
}

func (f uniformField) appendTo(dst []byte, g *Generator) []byte {
	return strconv.AppendInt(dst, f.next(g), 10)
}

type normalField struct {
	mean, stddev float64
	decimals     int
}

func (f normalField) appendTo(dst []byte, g *Generator) []byte {
	v := f.mean + f.stddev*g.rng.NormFloat64()
	if math.IsInf(v, 0) { // a mean and stddev near the float limits
		v = math.Copysign(math.MaxFloat64, v)
	}
	return strconv.AppendFloat(dst, v, 'f', f.decimals, 64)
}

type zipfField struct {
	z   *rand.Zipf
	max uint64
}

// next draws from [1, max]; the clamp guards against the float rounding
// of extreme parameters.
func (f zipfField) next(*Generator) int64 { return int64(1 + min(f.z.Uint64(), f.max-1)) }

func (f zipfField) appendTo(dst []byte, g *Generator) []byte {
	return strconv.AppendInt(dst, f.next(g), 10)
}

type choiceField struct {
	values [][]byte
	cum    []float64
	total  float64
}

func (f choiceField) appendTo(dst []byte, g *Generator) []byte {
	if f.cum == nil {
		return append(dst, f.values[g.rng.IntN(len(f.values))]...)
	}
	u := g.rng.Float64() * f.total
	i := sort.Search(len(f.cum), func(i int) bool { return f.cum[i] > u })
	if i == len(f.cum) { // u rounded up to the total
		i--
		for f.cum[i] == 0 || i > 0 && f.cum[i] == f.cum[i-1] {
			i--
		}
	}
	return append(dst, f.values[i]...)
}

type stringField struct {
	prefix, suffix []byte
	of             intField
}

func (f stringField) appendTo(dst []byte, g *Generator) []byte {
	dst = append(dst, '"')
	dst = append(dst, f.prefix...)
	dst = strconv.AppendInt(dst, f.of.next(g), 10)
	dst = append(dst, f.suffix...)
	return append(dst, '"')
}

type nowField struct{ jitter int64 }

func (f nowField) appendTo(dst []byte, g *Generator) []byte {
	var ms int64
	if g.Now != nil {
		ms = g.Now()
	} else {
		ms = time.Now().UnixMilli()
	}
	if f.jitter > 0 {
		ms -= g.rng.Int64N(f.jitter + 1)
	}
	return strconv.AppendInt(dst, ms, 10)
}

type boolField struct{ p float64 }

func (f boolField) appendTo(dst []byte, g *Generator) []byte {
	return strconv.AppendBool(dst, g.rng.Float64() < f.p)
}
