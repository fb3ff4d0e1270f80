package job

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/vm"
)

// decoder turns a record's JSON object into the fields a job's
// expressions see: whole numbers as int64 (so that expressions such as
// id % 10 work), other numbers as float64, strings, bools, nil, and
// nested objects and arrays as map[string]any and []any.
//
// It reads a record in one pass, checking all of it as strictly as
// encoding/json does (the same records are refused, a fuzz test holds it
// to that), and when the job reads only some fields (no record goes to
// its sink whole) it builds only those: a Nexmark bid, of which q0 reads
// two fields, costs a tenth of encoding/json's decode into a map. It
// keeps no state between records; a task's decoder is its own anyway.
type decoder struct {
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

// maxDepth bounds the nesting of objects and arrays, as encoding/json's
// does.
const maxDepth = 10000

// decode decodes b, which must be one JSON object.
func (d *decoder) decode(b []byte) (map[string]any, error) {
	s := scanner{b: b}
	s.space()
	if s.i < len(b) && b[s.i] != '{' {
		v, err := s.value(true)
		if err == nil {
			err = s.end()
		}
		if err != nil {
			return nil, err
		}
		if v == nil {
			return nil, errors.New("want a JSON object, got null")
		}
		return nil, fmt.Errorf("want a JSON object, got a %T", v)
	}
	if s.i >= len(b) {
		return nil, errors.New("unexpected end of JSON input")
	}
	m, err := s.object(true, d.names, d.only != nil)
	if err != nil {
		return nil, err
	}
	if err := s.end(); err != nil {
		return nil, err
	}
	return m.(map[string]any), nil
}

// scanner reads one JSON document. Building values is optional at each
// step: a value nobody reads is only checked.
type scanner struct {
	b     []byte
	i     int
	depth int
}

func (s *scanner) errorf(format string, args ...any) error {
	return fmt.Errorf("offset %d: "+format, append([]any{s.i}, args...)...)
}

func (s *scanner) space() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// end checks that nothing but white space follows.
func (s *scanner) end() error {
	s.space()
	if s.i < len(s.b) {
		return s.errorf("invalid character %q after the JSON value", s.b[s.i])
	}
	return nil
}

// value reads the value at s.i; with build false it returns nil.
func (s *scanner) value(build bool) (any, error) {
	if s.i >= len(s.b) {
		return nil, errors.New("unexpected end of JSON input")
	}
	switch c := s.b[s.i]; {
	case c == '{':
		return s.object(build, nil, false)
	case c == '[':
		return s.array(build)
	case c == '"':
		raw, err := s.str()
		if err != nil || !build {
			return nil, err
		}
		return validString(raw), nil
	case c == '-' || c >= '0' && c <= '9':
		return s.number(build)
	case c == 't':
		return true, s.literal("true")
	case c == 'f':
		return false, s.literal("false")
	case c == 'n':
		return nil, s.literal("null")
	}
	return nil, s.errorf("invalid character %q looking for the beginning of a value", s.b[s.i])
}

func (s *scanner) literal(lit string) error {
	if len(s.b)-s.i < len(lit) || string(s.b[s.i:s.i+len(lit)]) != lit {
		return s.errorf("invalid literal, want %s", lit)
	}
	s.i += len(lit)
	return nil
}

// object reads the object at s.i. With selective set it builds only the
// members named in names (and build must be set).
func (s *scanner) object(build bool, names []string, selective bool) (any, error) {
	if s.depth++; s.depth > maxDepth {
		return nil, s.errorf("exceeded max depth")
	}
	defer func() { s.depth-- }()
	s.i++ // '{'
	var m map[string]any
	if build {
		hint := 0
		if selective {
			hint = len(names)
		}
		m = make(map[string]any, hint)
	}
	s.space()
	if s.i < len(s.b) && s.b[s.i] == '}' {
		s.i++
		return m, nil
	}
	for {
		if s.i >= len(s.b) || s.b[s.i] != '"' {
			return nil, s.errorf("want a string for an object key")
		}
		raw, err := s.str()
		if err != nil {
			return nil, err
		}
		s.space()
		if s.i >= len(s.b) || s.b[s.i] != ':' {
			return nil, s.errorf("want ':' after an object key")
		}
		s.i++
		s.space()
		want, key := build, ""
		switch {
		case selective:
			// The name itself, when it is the key: no copy of the key.
			want = false
			for _, n := range names {
				if string(raw) == n {
					key, want = n, true
					break
				}
			}
		case build:
			key = validString(raw)
		}
		v, err := s.value(want)
		if err != nil {
			return nil, err
		}
		if want {
			m[key] = v
		}
		if done, err := s.next('}', "an object member"); done || err != nil {
			return m, err
		}
	}
}

// next reads what follows a member or an element: a comma (more follow),
// or closer (done).
func (s *scanner) next(closer byte, what string) (done bool, err error) {
	s.space()
	if s.i >= len(s.b) {
		return false, errors.New("unexpected end of JSON input")
	}
	switch s.b[s.i] {
	case ',':
		s.i++
		s.space()
		return false, nil
	case closer:
		s.i++
		return true, nil
	}
	return false, s.errorf("invalid character %q after %s", s.b[s.i], what)
}

func (s *scanner) array(build bool) (any, error) {
	if s.depth++; s.depth > maxDepth {
		return nil, s.errorf("exceeded max depth")
	}
	defer func() { s.depth-- }()
	s.i++ // '['
	var a []any
	if build {
		a = []any{}
	}
	s.space()
	if s.i < len(s.b) && s.b[s.i] == ']' {
		s.i++
		return a, nil
	}
	for {
		v, err := s.value(build)
		if err != nil {
			return nil, err
		}
		if build {
			a = append(a, v)
		}
		if done, err := s.next(']', "an array element"); done || err != nil {
			return a, err
		}
	}
}

// str reads the string at s.i (its opening quote) and returns its bytes
// unescaped: s.b's own when it has no escapes. validString makes them the
// string encoding/json would: a byte that is not UTF-8 becomes U+FFFD.
func (s *scanner) str() ([]byte, error) {
	start := s.i + 1
	for i := start; i < len(s.b); i++ {
		switch c := s.b[i]; {
		case c == '"':
			s.i = i + 1
			return s.b[start:i], nil
		case c == '\\':
			return s.escaped(start)
		case c < 0x20:
			s.i = i
			return nil, s.errorf("invalid control character %q in a string", c)
		}
	}
	s.i = len(s.b)
	return nil, errors.New("unexpected end of JSON input")
}

// escaped is str for a string with escapes, unescaped as encoding/json
// does: a UTF-16 surrogate escape without its pair becomes U+FFFD.
func (s *scanner) escaped(start int) ([]byte, error) {
	var out []byte
	i := start
	for i < len(s.b) {
		c := s.b[i]
		switch {
		case c == '"':
			s.i = i + 1
			return out, nil
		case c < 0x20:
			s.i = i
			return nil, s.errorf("invalid control character %q in a string", c)
		case c != '\\':
			out = append(out, c)
			i++
			continue
		}
		if i+1 >= len(s.b) {
			break
		}
		switch e := s.b[i+1]; e {
		case '"', '\\', '/':
			out = append(out, e)
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			r, ok := hex4(s.b[i+2:])
			if !ok {
				s.i = i
				return nil, s.errorf("invalid \\u escape in a string")
			}
			i += 6
			if utf16.IsSurrogate(r) {
				// Its pair must follow at once, else U+FFFD, and what
				// follows is read on its own.
				if len(s.b)-i >= 6 && s.b[i] == '\\' && s.b[i+1] == 'u' {
					if r2, ok := hex4(s.b[i+2:]); ok {
						if dec := utf16.DecodeRune(r, r2); dec != utf8.RuneError {
							out = utf8.AppendRune(out, dec)
							i += 6
							continue
						}
					}
				}
				r = utf8.RuneError
			}
			out = utf8.AppendRune(out, r)
			continue
		default:
			s.i = i
			return nil, s.errorf("invalid escape %q in a string", e)
		}
		i += 2
	}
	s.i = len(s.b)
	return nil, errors.New("unexpected end of JSON input")
}

// hex4 reads four hex digits.
func hex4(b []byte) (rune, bool) {
	if len(b) < 4 {
		return 0, false
	}
	var r rune
	for _, c := range b[:4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		case c >= 'A' && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

// number reads a number as JSON spells it: an int64 when it is whole and
// fits (as json.Number.Int64 reads it), else a float64.
func (s *scanner) number(build bool) (any, error) {
	start, i := s.i, s.i
	if s.b[i] == '-' {
		i++
	}
	digits := func() int {
		n := 0
		for i < len(s.b) && s.b[i] >= '0' && s.b[i] <= '9' {
			i++
			n++
		}
		return n
	}
	switch {
	case i < len(s.b) && s.b[i] == '0':
		i++
	case digits() == 0:
		s.i = i
		return nil, s.errorf("invalid number")
	}
	whole := true
	if i < len(s.b) && s.b[i] == '.' {
		i++
		whole = false
		if digits() == 0 {
			s.i = i
			return nil, s.errorf("invalid number: no digit after '.'")
		}
	}
	if i < len(s.b) && (s.b[i] == 'e' || s.b[i] == 'E') {
		i++
		whole = false
		if i < len(s.b) && (s.b[i] == '+' || s.b[i] == '-') {
			i++
		}
		if digits() == 0 {
			s.i = i
			return nil, s.errorf("invalid number: no digit in the exponent")
		}
	}
	s.i = i
	if !build {
		return nil, nil
	}
	text := s.b[start:i]
	if whole {
		if n, ok := smallInt(text); ok {
			return n, nil
		}
		if n, err := strconv.ParseInt(string(text), 10, 64); err == nil {
			return n, nil
		}
	}
	f, _ := strconv.ParseFloat(string(text), 64)
	return f, nil
}

// smallInt parses a whole number of up to 18 digits, which cannot
// overflow, without strconv's string.
func smallInt(b []byte) (int64, bool) {
	neg := b[0] == '-'
	if neg {
		b = b[1:]
	}
	if len(b) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range b {
		n = n*10 + int64(c-'0')
	}
	if neg {
		n = -n
	}
	return n, true
}

// validString copies b into a string, replacing each byte that is not
// UTF-8 with U+FFFD, as encoding/json does.
func validString(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	out := make([]byte, 0, len(b)+8)
	for len(b) > 0 {
		r, size := utf8.DecodeRune(b)
		if r == utf8.RuneError && size == 1 {
			out = utf8.AppendRune(out, utf8.RuneError)
		} else {
			out = append(out, b[:size]...)
		}
		b = b[size:]
	}
	return string(out)
}

// errAllFields says an expression may read any field ($env).
var errAllFields = errors.New("reads the whole environment")

// fieldsRead adds to into the names an expression may read from its
// record: every identifier in it, a superset (a variable or function
// name counts too); it returns errAllFields when it uses $env.
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
