package job

import (
	"fmt"
	"sort"
	"strconv"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/vm"

	"mecha/stream/agg"
)

// program is a job's compiled expressions.
type program struct {
	filter  *vm.Program
	mapping []mapField
	keyBy   *vm.Program
	field   *vm.Program
}

type mapField struct {
	name string
	prog *vm.Program
}

// compile compiles every expression of s; errors name the field.
func compile(s Spec) (*program, error) {
	p := &program{}
	var err error
	if s.Filter != "" {
		if p.filter, err = expr.Compile(s.Filter, expr.AsBool()); err != nil {
			return nil, fmt.Errorf("%w %q: spec.filter: %v", ErrSpec, s.Name, err)
		}
	}
	names := make([]string, 0, len(s.Map))
	for n := range s.Map {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		prog, err := expr.Compile(s.Map[n])
		if err != nil {
			return nil, fmt.Errorf("%w %q: spec.map.%s: %v", ErrSpec, s.Name, n, err)
		}
		p.mapping = append(p.mapping, mapField{n, prog})
	}
	if s.KeyBy != "" {
		if p.keyBy, err = expr.Compile(s.KeyBy); err != nil {
			return nil, fmt.Errorf("%w %q: spec.keyBy: %v", ErrSpec, s.Name, err)
		}
	}
	if s.Aggregate.Field != "" {
		if p.field, err = expr.Compile(s.Aggregate.Field); err != nil {
			return nil, fmt.Errorf("%w %q: spec.aggregate.field: %v", ErrSpec, s.Name, err)
		}
	}
	return p, nil
}

// apply runs filter, map, key-by and the aggregate field over one record.
// keep is false when the filter drops it.
func (p *program) apply(rec map[string]any) (out map[string]any, key string, in agg.Input, keep bool, err error) {
	if p.filter != nil {
		v, err := expr.Run(p.filter, rec)
		if err != nil {
			return nil, "", in, false, fmt.Errorf("filter: %w", err)
		}
		if b, _ := v.(bool); !b {
			return nil, "", in, false, nil
		}
	}
	out = rec
	if len(p.mapping) > 0 {
		out = make(map[string]any, len(p.mapping))
		for _, m := range p.mapping {
			v, err := expr.Run(m.prog, rec)
			if err != nil {
				return nil, "", in, false, fmt.Errorf("map.%s: %w", m.name, err)
			}
			out[m.name] = v
		}
	}
	if p.keyBy != nil {
		v, err := expr.Run(p.keyBy, out)
		if err != nil {
			return nil, "", in, false, fmt.Errorf("keyBy: %w", err)
		}
		key = toString(v)
	}
	if p.field != nil {
		v, err := expr.Run(p.field, out)
		if err != nil {
			return nil, "", in, false, fmt.Errorf("aggregate.field: %w", err)
		}
		in.Str = toString(v)
		if f, ok := toFloat(v); ok {
			in.Num = f
		}
	}
	return out, key, in, true, nil
}

func toString(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	case nil:
		return ""
	}
	return fmt.Sprint(v)
}

func toFloat(v any) (float64, bool) {
	switch x := v.(type) {
	case float64:
		return x, true
	case int:
		return float64(x), true
	case int64:
		return float64(x), true
	}
	return 0, false
}
