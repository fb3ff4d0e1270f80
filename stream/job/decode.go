package job

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/vm"
	"github.com/valyala/fastjson"
)

// decoder turns a record's JSON object into the fields a job's
// expressions see: whole numbers as int64 (so that expressions such as
// id % 10 work), other numbers as float64, strings, bools, nil, and
// nested objects and arrays as map[string]any and []any. It runs on
// fastjson with a parser reused from record to record, and when the job
// reads only some fields (no record goes to its sink whole), it builds
// only those. Each task has its own: a decoder is not safe for
// concurrent use.
type decoder struct {
	p fastjson.Parser
	// only are the fields the job reads; nil when it needs them all.
	only map[string]struct{}
	// names are only's, for a scan that beats hashing each key of a
	// record when they are few.
	names []string
}

// newDecoder returns a decoder of the fields only, or of every field
// when only is nil.
func newDecoder(only map[string]struct{}) decoder {
	d := decoder{only: only}
	if only != nil {
		d.names = slices.Sorted(maps.Keys(only))
	}
	return d
}

// decode decodes b, which must be one JSON object, valid as
// encoding/json would have it (fastjson's parser alone lets some
// malformed numbers and strings through, so it is validated first).
func (d *decoder) decode(b []byte) (map[string]any, error) {
	if err := fastjson.ValidateBytes(b); err != nil {
		return nil, err
	}
	if needsStd(b) {
		return d.decodeStd(b)
	}
	v, err := d.p.ParseBytes(b)
	if err != nil {
		return nil, err
	}
	o, err := v.Object()
	if err != nil {
		return nil, fmt.Errorf("want a JSON object, got %s", v.Type())
	}
	n := o.Len()
	if d.only != nil {
		n = min(n, len(d.only))
	}
	m := make(map[string]any, n)
	if d.only == nil {
		o.Visit(func(k []byte, v *fastjson.Value) { m[validString(k)] = goValue(v) })
		return m, nil
	}
	o.Visit(func(k []byte, v *fastjson.Value) {
		for _, name := range d.names {
			if string(k) == name {
				// The name is the key's string: no copy of the key.
				m[name] = goValue(v)
				return
			}
		}
	})
	return m, nil
}

// decodeStd is decode on encoding/json, for what fastjson reads otherwise.
func (d *decoder) decodeStd(b []byte) (map[string]any, error) {
	var m map[string]any
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&m); err != nil {
		return nil, err
	}
	if m == nil {
		return nil, errors.New("want a JSON object, got null")
	}
	for k, v := range m {
		if _, ok := d.only[k]; d.only != nil && !ok {
			delete(m, k)
			continue
		}
		m[k] = stdNumbers(v)
	}
	return m, nil
}

// stdNumbers turns encoding/json's numbers into int64 or float64, as
// goValue does.
func stdNumbers(v any) any {
	switch x := v.(type) {
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return i
		}
		f, _ := x.Float64()
		return f
	case map[string]any:
		for k, e := range x {
			x[k] = stdNumbers(e)
		}
	case []any:
		for i, e := range x {
			x[i] = stdNumbers(e)
		}
	}
	return v
}

// needsStd reports whether b has what fastjson reads otherwise than
// encoding/json, rare in records: a control character inside a string
// (which fastjson's validation misses after an escape), or a UTF-16
// surrogate escape (fastjson keeps a lone one as its six characters,
// encoding/json gives U+FFFD).
func needsStd(b []byte) bool {
	in := false
	for i := 0; i < len(b); i++ {
		switch c := b[i]; {
		case c == '"':
			in = !in
		case !in:
		case c < 0x20:
			return true
		case c == '\\':
			if i+5 < len(b) && b[i+1] == 'u' && b[i+2]|0x20 == 'd' && strings.IndexByte("89abcdefABCDEF", b[i+3]) >= 0 {
				return true
			}
			i++ // the escaped character, a quote included
		}
	}
	return false
}

// goValue is v as encoding/json would decode it into an any, except
// that whole numbers that fit become int64.
func goValue(v *fastjson.Value) any {
	switch v.Type() {
	case fastjson.TypeNumber:
		if i, err := v.Int64(); err == nil {
			return i
		}
		// strconv from the number's text: fastjson's own float parse is
		// not correctly rounded everywhere (1e37).
		var buf [32]byte
		f, _ := strconv.ParseFloat(string(v.MarshalTo(buf[:0])), 64)
		return f
	case fastjson.TypeString:
		s, _ := v.StringBytes()
		return validString(s)
	case fastjson.TypeTrue:
		return true
	case fastjson.TypeFalse:
		return false
	case fastjson.TypeObject:
		o, _ := v.Object()
		m := make(map[string]any, o.Len())
		o.Visit(func(k []byte, e *fastjson.Value) { m[validString(k)] = goValue(e) })
		return m
	case fastjson.TypeArray:
		a, _ := v.Array()
		out := make([]any, len(a))
		for i, e := range a {
			out[i] = goValue(e)
		}
		return out
	}
	return nil
}

// validString copies b into a string, replacing each byte that is not
// UTF-8 with U+FFFD, as encoding/json does.
func validString(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	var sb strings.Builder
	for len(b) > 0 {
		r, size := utf8.DecodeRune(b)
		if r == utf8.RuneError && size == 1 {
			sb.WriteRune(utf8.RuneError)
		} else {
			sb.Write(b[:size])
		}
		b = b[size:]
	}
	return sb.String()
}

// errAllFields says an expression may read any field ($env).
var errAllFields = errors.New("reads the whole environment")

// fieldsRead returns the names an expression may read from its record:
// every identifier in it, a superset (a variable or function name counts
// too), or errAllFields when it uses $env.
func fieldsRead(p *vm.Program, into map[string]struct{}) error {
	if p == nil {
		return nil
	}
	node := p.Node()
	var err error
	ast.Walk(&node, visitor(func(n *ast.Node) {
		if id, ok := (*n).(*ast.IdentifierNode); ok {
			if id.Value == "$env" {
				err = errAllFields
			}
			into[id.Value] = struct{}{}
		}
	}))
	return err
}

type visitor func(*ast.Node)

func (v visitor) Visit(n *ast.Node) { v(n) }

// decodedFields is the set of fields the pipeline of s reads from a
// record, or nil when it needs every field: a record that reaches a sink
// whole (a pass-through without a map, to any sink but the blackhole; a
// join's pairs), or an expression reading $env.
func decodedFields(s Spec, p *program) map[string]struct{} {
	if s.Join != nil || (s.Window.Type == "" && len(s.Map) == 0 && s.Sink.Type != "blackhole") {
		return nil
	}
	only := map[string]struct{}{}
	progs := []*vm.Program{p.filter, p.mapAll}
	for _, m := range p.mapping {
		progs = append(progs, m.prog)
	}
	if len(s.Map) == 0 {
		// keyBy and the aggregate field read the record itself; after a
		// map, they read the map's result.
		progs = append(progs, p.keyBy, p.field)
	}
	for _, prog := range progs {
		if fieldsRead(prog, only) != nil {
			return nil
		}
	}
	if f := s.Source.EventTimeField; f != "" {
		only[f] = struct{}{}
	}
	return only
}
