package job

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/vm"

	"mecha/stream/agg"
)

// program is a job's compiled expressions. It is shared by the job's
// tasks; each runs it with its own VM (an evaluator).
type program struct {
	filter  *vm.Program
	mapping []mapField
	// mapAll builds the whole map in one run: {"a": (…), "b": (…)}.
	mapAll *vm.Program
	keyBy  *vm.Program
	field  *vm.Program
	// The right-hand side of a join.
	joinFilter *vm.Program
	joinKeyBy  *vm.Program
}

// evaluator runs a program's expressions with a VM of its own, reused
// from record to record; it is not safe for concurrent use.
type evaluator struct {
	p  *program
	vm vm.VM
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
		if p.filter, err = expr.Compile(s.Filter, recordEnv(expr.AsBool())...); err != nil {
			return nil, fmt.Errorf("%w %q: spec.filter: %v", ErrSpec, s.Name, err)
		}
	}
	names := make([]string, 0, len(s.Map))
	for n := range s.Map {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		prog, err := expr.Compile(s.Map[n], recordEnv()...)
		if err != nil {
			return nil, fmt.Errorf("%w %q: spec.map.%s: %v", ErrSpec, s.Name, n, err)
		}
		p.mapping = append(p.mapping, mapField{n, prog})
	}
	if len(names) > 0 {
		var b strings.Builder
		b.WriteString("{")
		for i, n := range names {
			if i > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "%s: (%s)", strconv.Quote(n), s.Map[n])
		}
		b.WriteString("}")
		// Each field compiled alone, so one that compiles alone does
		// here too; should it not, the fields run one by one.
		p.mapAll, _ = expr.Compile(b.String(), recordEnv()...)
	}
	if s.KeyBy != "" {
		if p.keyBy, err = expr.Compile(s.KeyBy, recordEnv()...); err != nil {
			return nil, fmt.Errorf("%w %q: spec.keyBy: %v", ErrSpec, s.Name, err)
		}
	}
	if s.Aggregate.Field != "" {
		if p.field, err = expr.Compile(s.Aggregate.Field, recordEnv()...); err != nil {
			return nil, fmt.Errorf("%w %q: spec.aggregate.field: %v", ErrSpec, s.Name, err)
		}
	}
	if j := s.Join; j != nil {
		if j.Filter != "" {
			if p.joinFilter, err = expr.Compile(j.Filter, recordEnv(expr.AsBool())...); err != nil {
				return nil, fmt.Errorf("%w %q: spec.join.filter: %v", ErrSpec, s.Name, err)
			}
		}
		if j.KeyBy != "" {
			if p.joinKeyBy, err = expr.Compile(j.KeyBy, recordEnv()...); err != nil {
				return nil, fmt.Errorf("%w %q: spec.join.keyBy: %v", ErrSpec, s.Name, err)
			}
		}
	}
	return p, nil
}

// recordEnv is the compile options for an expression over a record: the
// environment is a map of any fields, so the VM reads them without
// reflection, and a field a record lacks is nil rather than an error.
func recordEnv(opts ...expr.Option) []expr.Option {
	return append([]expr.Option{expr.Env(map[string]any{}), expr.AllowUndefinedVariables()}, opts...)
}

// apply runs filter, map, key-by and the aggregate field over one record
// (the join's filter and key-by over a right-hand one). keep is false
// when the filter drops it.
func (e *evaluator) apply(rec map[string]any, right bool) (out map[string]any, key string, in agg.Input, keep bool, err error) {
	p := e.p
	if right {
		if p.joinFilter != nil {
			v, err := e.vm.Run(p.joinFilter, rec)
			if err != nil {
				return nil, "", in, false, fmt.Errorf("join.filter: %w", err)
			}
			if b, _ := v.(bool); !b {
				return nil, "", in, false, nil
			}
		}
		v, err := e.vm.Run(p.joinKeyBy, rec)
		if err != nil {
			return nil, "", in, false, fmt.Errorf("join.keyBy: %w", err)
		}
		return rec, toString(v), in, true, nil
	}
	if p.filter != nil {
		v, err := e.vm.Run(p.filter, rec)
		if err != nil {
			return nil, "", in, false, fmt.Errorf("filter: %w", err)
		}
		if b, _ := v.(bool); !b {
			return nil, "", in, false, nil
		}
	}
	out = rec
	if len(p.mapping) > 0 {
		out = nil
		if p.mapAll != nil {
			if v, err := e.vm.Run(p.mapAll, rec); err == nil {
				out, _ = v.(map[string]any)
			}
		}
	}
	// Without the one-run map, or when it failed: field by field, so that
	// an error names its field.
	if out == nil {
		out = make(map[string]any, len(p.mapping))
		for _, m := range p.mapping {
			v, err := e.vm.Run(m.prog, rec)
			if err != nil {
				return nil, "", in, false, fmt.Errorf("map.%s: %w", m.name, err)
			}
			out[m.name] = v
		}
	}
	if p.keyBy != nil {
		v, err := e.vm.Run(p.keyBy, out)
		if err != nil {
			return nil, "", in, false, fmt.Errorf("keyBy: %w", err)
		}
		key = toString(v)
	}
	if p.field != nil {
		v, err := e.vm.Run(p.field, out)
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
	case int64:
		return strconv.FormatInt(x, 10)
	case int:
		return strconv.Itoa(x)
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
