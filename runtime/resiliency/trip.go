package resiliency

import (
	"fmt"
	"strings"
	"sync"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/interpreter"
)

// Counts are a circuit breaker's counters in the current generation, the
// variables a trip expression sees (names as in Dapr and gobreaker).
type Counts struct {
	Requests             uint32
	TotalSuccesses       uint32
	TotalFailures        uint32
	ConsecutiveSuccesses uint32
	ConsecutiveFailures  uint32
}

func (c *Counts) onRequest() { c.Requests++ }

func (c *Counts) onSuccess() {
	c.TotalSuccesses++
	c.ConsecutiveSuccesses++
	c.ConsecutiveFailures = 0
}

func (c *Counts) onFailure() {
	c.TotalFailures++
	c.ConsecutiveFailures++
	c.ConsecutiveSuccesses = 0
}

// tripFunc decides, after a failure in the closed state, whether the
// breaker opens.
type tripFunc func(Counts) bool

// defaultTrip is gobreaker's (and so Dapr's) default: more than five
// consecutive failures.
func defaultTrip(c Counts) bool { return c.ConsecutiveFailures > 5 }

var (
	tripEnvOnce sync.Once
	tripEnv     *cel.Env
	tripEnvErr  error
)

// tripVars are the variables of a trip expression, all ints.
var tripVars = []string{"requests", "totalSuccesses", "totalFailures", "consecutiveSuccesses", "consecutiveFailures"}

func tripEnvironment() (*cel.Env, error) {
	tripEnvOnce.Do(func() {
		opts := make([]cel.EnvOption, 0, len(tripVars))
		for _, v := range tripVars {
			opts = append(opts, cel.Variable(v, cel.IntType))
		}
		tripEnv, tripEnvErr = cel.NewEnv(opts...)
	})
	return tripEnv, tripEnvErr
}

// compileTrip compiles a trip expression once; the returned function only
// evaluates the program. Unlike Dapr, an unknown variable or a non-bool
// result is an error at load time rather than a breaker that never trips.
func compileTrip(expr string) (tripFunc, error) {
	if strings.TrimSpace(expr) == "" {
		return defaultTrip, nil
	}
	env, err := tripEnvironment()
	if err != nil {
		return nil, err
	}
	ast, iss := env.Compile(expr)
	if iss != nil && iss.Err() != nil {
		return nil, fmt.Errorf("%q does not compile: %s", expr, strings.ReplaceAll(iss.Err().Error(), "\n", " "))
	}
	if ast.OutputType() != cel.BoolType {
		return nil, fmt.Errorf("%q is of type %s, want bool (e.g. consecutiveFailures >= 5)", expr, ast.OutputType())
	}
	prg, err := env.Program(ast)
	if err != nil {
		return nil, fmt.Errorf("%q: %v", expr, err)
	}
	return func(c Counts) bool {
		out, _, err := prg.Eval(countsActivation{&c})
		if err != nil {
			// As in Dapr: an expression that fails to evaluate (say, a
			// division by zero) does not trip the breaker.
			return false
		}
		b, ok := out.Value().(bool)
		return ok && b
	}, nil
}

// countsActivation feeds Counts to a CEL program without building a map.
type countsActivation struct{ c *Counts }

// ResolveName implements interpreter.Activation.
func (a countsActivation) ResolveName(name string) (any, bool) {
	switch name {
	case "requests":
		return int64(a.c.Requests), true
	case "totalSuccesses":
		return int64(a.c.TotalSuccesses), true
	case "totalFailures":
		return int64(a.c.TotalFailures), true
	case "consecutiveSuccesses":
		return int64(a.c.ConsecutiveSuccesses), true
	case "consecutiveFailures":
		return int64(a.c.ConsecutiveFailures), true
	}
	return nil, false
}

// Parent implements interpreter.Activation.
func (a countsActivation) Parent() interpreter.Activation { return nil }
