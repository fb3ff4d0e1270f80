package gen

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"

	"mecha/internal/jsonstr"
)

// ErrTemplate is wrapped by every invalid template; its text, "template",
// starts each such error.
var ErrTemplate = errors.New("template")

// maxDepth bounds the nesting of a template, so that a hostile one
// cannot exhaust the stack.
const maxDepth = 64

// maxJitter bounds a now generator's jitter: a year of milliseconds.
const maxJitter = 365 * 24 * 3600 * 1000

// Template is a compiled record template: literal chunks around generator
// slots. It is immutable; each Generator made from it keeps its own state.
type Template struct {
	// chunks[i] precedes slots[i]; the last chunk closes the record.
	chunks [][]byte
	slots  []*dist
	// top maps each top-level field to what a record key made of it is.
	top map[string]keyRef
}

// keyRef is where the value of a top-level field comes from: a slot, or
// a constant.
type keyRef struct {
	slot  int    // -1 for a constant
	konst []byte // the key a constant gives; nil for null
	ok    bool   // false for an object or an array, which make no key
}

// node is a parsed JSON value that keeps the order of object keys.
type node struct {
	kind  byte     // '{' object, '[' array, 0 scalar
	keys  []string // an object's keys, in order
	elems []*node  // an object's values, or an array's elements
	tok   any      // a scalar: string, json.Number, bool or nil
}

// get returns an object's value for key, or nil.
func (n *node) get(key string) *node {
	for i, k := range n.keys {
		if k == key {
			return n.elems[i]
		}
	}
	return nil
}

// ParseTemplate decodes and validates a template (see the package doc).
func ParseTemplate(raw []byte) (*Template, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	root, err := parseValue(dec, "$", 0)
	if err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: $: data after the top-level object (at byte %d)", ErrTemplate, dec.InputOffset())
	}
	if root.kind != '{' {
		return nil, fmt.Errorf("%w: $: want a JSON object", ErrTemplate)
	}
	if root.get("dist") != nil {
		return nil, fmt.Errorf("%w: $: the record itself cannot be a generator; put it in a field", ErrTemplate)
	}
	c := compiler{t: &Template{top: map[string]keyRef{}}}
	c.lit = append(c.lit, '{')
	for i, k := range root.keys {
		if i > 0 {
			c.lit = append(c.lit, ',')
		}
		c.lit = appendQuoted(c.lit, k)
		c.lit = append(c.lit, ':')
		child := root.elems[i]
		ref := keyRef{slot: -1}
		switch {
		case child.kind == '{' && child.get("dist") != nil:
			ref = keyRef{slot: len(c.t.slots), ok: true}
		case child.kind == 0:
			ref.ok = true
			switch v := child.tok.(type) {
			case string:
				ref.konst = []byte(v)
			case nil:
			default:
				ref.konst = appendScalar(nil, v)
			}
		}
		c.t.top[k] = ref
		if err := c.value(child, pathOf("$", k)); err != nil {
			return nil, err
		}
	}
	c.lit = append(c.lit, '}')
	c.t.chunks = append(c.t.chunks, c.lit)
	return c.t, nil
}

// parseValue reads one JSON value, keeping object keys in order.
func parseValue(dec *json.Decoder, path string, depth int) (*node, error) {
	tok, err := dec.Token()
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("%w: %s: %v (at byte %d)", ErrTemplate, path, strings.TrimPrefix(err.Error(), "json: "), dec.InputOffset())
	}
	d, ok := tok.(json.Delim)
	if !ok {
		return &node{tok: tok}, nil
	}
	if depth >= maxDepth {
		return nil, fmt.Errorf("%w: %s: nested deeper than %d levels", ErrTemplate, path, maxDepth)
	}
	n := &node{kind: byte(d)}
	for i := 0; dec.More(); i++ {
		childPath := path + "[" + strconv.Itoa(i) + "]"
		if d == '{' {
			kt, err := dec.Token()
			if err != nil {
				return nil, fmt.Errorf("%w: %s: %v (at byte %d)", ErrTemplate, path, strings.TrimPrefix(err.Error(), "json: "), dec.InputOffset())
			}
			k, _ := kt.(string) // the decoder only gives strings as object keys
			childPath = pathOf(path, k)
			if n.get(k) != nil {
				return nil, fmt.Errorf("%w: %s: duplicate key", ErrTemplate, childPath)
			}
			n.keys = append(n.keys, k)
		}
		child, err := parseValue(dec, childPath, depth+1)
		if err != nil {
			return nil, err
		}
		n.elems = append(n.elems, child)
	}
	if _, err := dec.Token(); err != nil { // the closing delimiter
		return nil, fmt.Errorf("%w: %s: %v (at byte %d)", ErrTemplate, path, strings.TrimPrefix(err.Error(), "json: "), dec.InputOffset())
	}
	return n, nil
}

// pathOf names key under path: $.a.b, or $["a b"] when the key is not a
// plain identifier.
func pathOf(path, key string) string {
	plain := key != ""
	for i, r := range key {
		if !(r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || i > 0 && (r == '-' || r >= '0' && r <= '9')) {
			plain = false
			break
		}
	}
	if plain {
		return path + "." + key
	}
	return path + "[" + strconv.Quote(key) + "]"
}

// compiler turns a parsed template into chunks and slots.
type compiler struct {
	t   *Template
	lit []byte // the literal chunk being built
}

// value compiles n at path.
func (c *compiler) value(n *node, path string) error {
	switch n.kind {
	case 0:
		c.lit = appendScalar(c.lit, n.tok)
	case '[':
		c.lit = append(c.lit, '[')
		for i, e := range n.elems {
			if i > 0 {
				c.lit = append(c.lit, ',')
			}
			if err := c.value(e, path+"["+strconv.Itoa(i)+"]"); err != nil {
				return err
			}
		}
		c.lit = append(c.lit, ']')
	case '{':
		if n.get("dist") != nil {
			d, err := parseDist(n, path)
			if err != nil {
				return err
			}
			c.t.chunks = append(c.t.chunks, c.lit)
			c.t.slots = append(c.t.slots, d)
			c.lit = nil
			return nil
		}
		c.lit = append(c.lit, '{')
		for i, k := range n.keys {
			if i > 0 {
				c.lit = append(c.lit, ',')
			}
			c.lit = appendQuoted(c.lit, k)
			c.lit = append(c.lit, ':')
			if err := c.value(n.elems[i], pathOf(path, k)); err != nil {
				return err
			}
		}
		c.lit = append(c.lit, '}')
	}
	return nil
}

// appendLiteral writes n as compact JSON, generators included as they
// are (choice values are constants).
func appendLiteral(dst []byte, n *node) []byte {
	switch n.kind {
	case '[':
		dst = append(dst, '[')
		for i, e := range n.elems {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendLiteral(dst, e)
		}
		return append(dst, ']')
	case '{':
		dst = append(dst, '{')
		for i, k := range n.keys {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendQuoted(dst, k)
			dst = append(dst, ':')
			dst = appendLiteral(dst, n.elems[i])
		}
		return append(dst, '}')
	}
	return appendScalar(dst, n.tok)
}

// appendScalar writes a decoded JSON scalar.
func appendScalar(dst []byte, tok any) []byte {
	switch v := tok.(type) {
	case string:
		return appendQuoted(dst, v)
	case json.Number:
		return append(dst, v...)
	case bool:
		return strconv.AppendBool(dst, v)
	}
	return append(dst, "null"...)
}

// appendQuoted writes s as a JSON string.
func appendQuoted(dst []byte, s string) []byte {
	dst = append(dst, '"')
	dst = jsonstr.AppendEscaped(dst, s)
	return append(dst, '"')
}

// dist is one validated generator.
type dist struct {
	kind string

	start int64 // sequence

	min  int64 // uniform
	span uint64

	mean, stddev float64 // normal
	decimals     int

	s, v float64 // zipf
	max  uint64

	values [][]byte  // choice, each compact JSON
	cum    []float64 // choice: cumulative weights; nil when uniform
	prefix []byte    // string, escaped
	suffix []byte
	of     *dist
	jitter int64   // now
	p      float64 // bool
}

// params reads a generator's parameters and reports the first bad one.
type params struct {
	n    *node
	path string
	kind string
	used map[string]bool
}

func (p *params) errorf(format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s: %s", ErrTemplate, p.path, p.kind, fmt.Sprintf(format, args...))
}

// get returns a parameter, or nil when absent.
func (p *params) get(name string) *node {
	p.used[name] = true
	return p.n.get(name)
}

// number reads a finite number parameter.
func (p *params) number(name string, def float64, required bool) (float64, error) {
	v := p.get(name)
	if v == nil {
		if required {
			return 0, p.errorf("%s: required", name)
		}
		return def, nil
	}
	num, ok := v.tok.(json.Number)
	if v.kind != 0 || !ok {
		return 0, p.errorf("%s: want a number, got %s", name, appendLiteral(nil, v))
	}
	f, err := strconv.ParseFloat(string(num), 64)
	if err != nil || math.IsInf(f, 0) {
		return 0, p.errorf("%s: %s is out of range", name, num)
	}
	return f, nil
}

// integer reads an integer parameter; 1e6 counts as one.
func (p *params) integer(name string, def int64, required bool) (int64, error) {
	v := p.get(name)
	if v == nil {
		if required {
			return 0, p.errorf("%s: required", name)
		}
		return def, nil
	}
	num, ok := v.tok.(json.Number)
	if v.kind != 0 || !ok {
		return 0, p.errorf("%s: want an integer, got %s", name, appendLiteral(nil, v))
	}
	if i, err := strconv.ParseInt(string(num), 10, 64); err == nil {
		return i, nil
	}
	f, err := strconv.ParseFloat(string(num), 64)
	if err != nil || f != math.Trunc(f) || f < -(1<<63) || f >= 1<<63 {
		return 0, p.errorf("%s: want an integer, got %s", name, num)
	}
	return int64(f), nil
}

// str reads a string parameter.
func (p *params) str(name string) (string, error) {
	v := p.get(name)
	if v == nil {
		return "", nil
	}
	s, ok := v.tok.(string)
	if v.kind != 0 || !ok {
		return "", p.errorf("%s: want a string, got %s", name, appendLiteral(nil, v))
	}
	return s, nil
}

// distParams lists each generator's parameters, for unknown-key errors.
var distParams = map[string][]string{
	"sequence": {"start"},
	"uniform":  {"min", "max"},
	"normal":   {"mean", "stddev", "decimals"},
	"zipf":     {"s", "v", "max"},
	"choice":   {"values", "weights"},
	"string":   {"prefix", "suffix", "of"},
	"now":      {"jitter"},
	"bool":     {"p"},
}

// distNames is the list of generators, for errors.
const distNames = "sequence, uniform, normal, zipf, choice, string, now or bool"

// parseDist validates the generator object n at path.
func parseDist(n *node, path string) (*dist, error) {
	kindNode := n.get("dist")
	kind, ok := kindNode.tok.(string)
	if kindNode.kind != 0 || !ok {
		return nil, fmt.Errorf("%w: %s: dist: want a string (%s), got %s", ErrTemplate, path, distNames, appendLiteral(nil, kindNode))
	}
	allowed, ok := distParams[kind]
	if !ok {
		return nil, fmt.Errorf("%w: %s: dist: unknown distribution %q (want %s)", ErrTemplate, path, kind, distNames)
	}
	p := &params{n: n, path: path, kind: kind, used: map[string]bool{"dist": true}}
	d := &dist{kind: kind}
	var err error
	switch kind {
	case "sequence":
		d.start, err = p.integer("start", 0, false)
	case "uniform":
		var lo, hi int64
		if lo, err = p.integer("min", 0, true); err != nil {
			return nil, err
		}
		if hi, err = p.integer("max", 0, true); err != nil {
			return nil, err
		}
		if lo > hi {
			return nil, p.errorf("min %d > max %d", lo, hi)
		}
		d.min, d.span = lo, uint64(hi)-uint64(lo)
	case "normal":
		if d.mean, err = p.number("mean", 0, false); err != nil {
			return nil, err
		}
		if d.stddev, err = p.number("stddev", 0, true); err != nil {
			return nil, err
		}
		if d.stddev < 0 {
			return nil, p.errorf("stddev %v < 0", d.stddev)
		}
		dec, err := p.integer("decimals", -1, false)
		if err != nil {
			return nil, err
		}
		if dec != -1 && (dec < 0 || dec > 15) {
			return nil, p.errorf("decimals %d: want 0 to 15", dec)
		}
		d.decimals = int(dec)
	case "zipf":
		if d.s, err = p.number("s", 0, true); err != nil {
			return nil, err
		}
		if !(d.s > 1 && d.s <= 1000) {
			return nil, p.errorf("s %v: want > 1 and ≤ 1000", d.s)
		}
		if d.v, err = p.number("v", 1, false); err != nil {
			return nil, err
		}
		if !(d.v >= 1 && d.v <= 1<<53) {
			return nil, p.errorf("v %v: want ≥ 1 and ≤ 2^53", d.v)
		}
		mx, err := p.integer("max", 0, true)
		if err != nil {
			return nil, err
		}
		if mx < 1 {
			return nil, p.errorf("max %d: want ≥ 1", mx)
		}
		d.max = uint64(mx)
	case "choice":
		if err := parseChoice(p, d); err != nil {
			return nil, err
		}
	case "string":
		prefix, err := p.str("prefix")
		if err != nil {
			return nil, err
		}
		suffix, err := p.str("suffix")
		if err != nil {
			return nil, err
		}
		d.prefix, d.suffix = jsonstr.AppendEscaped(nil, prefix), jsonstr.AppendEscaped(nil, suffix)
		of := p.get("of")
		if of == nil {
			return nil, p.errorf("of: required (an integer generator: sequence, uniform or zipf)")
		}
		if of.kind != '{' || of.get("dist") == nil {
			return nil, p.errorf("of: want a generator object such as {\"dist\":\"sequence\"}, got %s", appendLiteral(nil, of))
		}
		if d.of, err = parseDist(of, path+".of"); err != nil {
			return nil, err
		}
		switch d.of.kind {
		case "sequence", "uniform", "zipf":
		default:
			return nil, p.errorf("of: want an integer generator (sequence, uniform or zipf), got %s", d.of.kind)
		}
	case "now":
		if d.jitter, err = p.integer("jitter", 0, false); err != nil {
			return nil, err
		}
		if d.jitter < 0 || d.jitter > maxJitter {
			return nil, p.errorf("jitter %d: want 0 to %d ms", d.jitter, int64(maxJitter))
		}
	case "bool":
		if d.p, err = p.number("p", 0.5, false); err != nil {
			return nil, err
		}
		if d.p < 0 || d.p > 1 {
			return nil, p.errorf("p %v: want 0 to 1", d.p)
		}
	}
	if err != nil {
		return nil, err
	}
	for _, k := range n.keys {
		if !p.used[k] {
			return nil, p.errorf("unknown parameter %q (want %s)", k, strings.Join(allowed, ", "))
		}
	}
	return d, nil
}

// parseChoice reads a choice's values and weights.
func parseChoice(p *params, d *dist) error {
	vals := p.get("values")
	if vals == nil {
		return p.errorf("values: required")
	}
	if vals.kind != '[' || len(vals.elems) == 0 {
		return p.errorf("values: want a non-empty array, got %s", appendLiteral(nil, vals))
	}
	for _, v := range vals.elems {
		d.values = append(d.values, appendLiteral(nil, v))
	}
	ws := p.get("weights")
	if ws == nil {
		return nil
	}
	if ws.kind != '[' || len(ws.elems) != len(vals.elems) {
		return p.errorf("weights: want an array of %d numbers, one per value, got %s", len(vals.elems), appendLiteral(nil, ws))
	}
	total := 0.0
	for i, w := range ws.elems {
		num, ok := w.tok.(json.Number)
		f, err := strconv.ParseFloat(string(num), 64)
		if w.kind != 0 || !ok || err != nil || math.IsInf(f, 0) || f < 0 {
			return p.errorf("weights[%d]: want a number ≥ 0, got %s", i, appendLiteral(nil, w))
		}
		total += f
		d.cum = append(d.cum, total)
	}
	if !(total > 0) || math.IsInf(total, 0) {
		return p.errorf("weights: want a finite sum > 0, got %v", total)
	}
	return nil
}
